"""Every bad input in tests/data/bad_inputs through `labelloop setup` and `labelloop simulate`.

What each case must give (issue 13): exit code 2, the error printed once (one line on
stderr naming the file and the row/line or field), no traceback, and the campaign
folder byte-for-byte as it was: no ledger file, no workdir, no Prefect run. The
commands validate everything before the first write and before Prefect starts
(``flows.setup.preflight``, ``flows.simulate.load_simulation_data``), so most cases
run in-process through ``flows.cli.main`` (fast: no server, no subprocess); a handful
run through the real entry point in a subprocess to prove the same holds there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli

BAD = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"

# (corpus entry, regexes the setup error must match). Data files are the campaign's [data] path;
# *.toml entries are config fragments merged over a valid campaign (their [data] path is a good file).
SETUP_CASES: list[tuple[str, list[str]]] = [
    ("unbalanced_quote.csv", [r"line 3 \(data row 2\)", r"never closed"]),
    ("wrong_field_count.csv", [r"line 5 \(data row 3\)", r"4 fields"]),
    ("malformed_line.jsonl", [r"line 4\b", r"not valid JSON"]),
    ("not_an_object.jsonl", [r"line 2\b", r"JSON object"]),
    ("nested_value.jsonl", [r"line 2\b", r"field 'text'"]),
    ("latin1_encoded.csv", [r"line 3\b", r"\[data\] encoding = \"latin-1\""]),
    ("missing_text_column.csv", [r"missing column\(s\) 'text'", r"available columns"]),
    ("tab_separated_named_csv.csv", [r"one column", r"tab-separated", r"delimiter = '\\t'"]),
    ("empty.csv", [r"file is empty"]),
    ("header_only.csv", [r"no data rows"]),
    ("blank_lines_only.jsonl", [r"no JSON records"]),
    ("pool.txt", [r"unknown file type '\.txt'"]),
    ("corrupt.parquet", [r"not a readable Parquet file", r"CSV or JSON Lines"]),
    ("empty_texts.csv", [r"\br2\b", r"\br4\b", r"text"]),
    ("whitespace_texts.csv", [r"\br2\b", r"\br3\b", r"text"]),
    ("missing_ids.csv", [r"row", r"\bid\b"]),
    ("duplicate_ids.csv", [r"\br1\b", r"\br2\b"]),
    ("ids_collide_after_normalisation.csv", [r"\ba1\b", r"café"]),
    ("labels_outside_set.csv", [r"\br3\b", r"\br4\b", r"label"]),
    ("symlink_loop_a.csv", [r"symbolic link loop"]),
    ("int_text_column.parquet", [r"column 'text'", r"int64", r"'0', '1', '2'"]),
    ("mixed_folder", [r"c_notes\.txt", r"d_logo\.png", r"skip_unsupported_files"]),
    ("utf16_bom.csv", [r"UTF-16", r"byte-order mark", r"\[data\] encoding = \"utf-16\""]),
    ("utf32_bom.csv", [r"UTF-32", r"\[data\] encoding = \"utf-32\""]),
    ("utf16_no_bom.csv", [r"NUL byte at byte offset 1", r"utf-16-le"]),
    ("xlsx_renamed.csv", [r"Excel workbook", r"CSV UTF-8"]),
    ("parquet_named.csv", [r"Parquet file", r"rename it to \.parquet"]),
    ("gzip_named.csv", [r"gzip"]),
    ("image_named.csv", [r"PNG image"]),
    ("semicolon_delimited.csv", [r"line 3 \(data row 2\)", r"delimiter ';'"]),
    ("number_text.jsonl", [r"line 2\b", r"field 'text'", r"got int 42"]),
    ("stratified_missing_labels.csv", [r"stratified", r"row 2 \(id 'r2'\)", r"row 4 \(id 'r4'\)", r"'label'"]),
    ("label_too_long.toml", [r"labels\.names", r"300 characters", r"at most 256"]),
    ("label_control_character.toml", [r"labels\.names", r"U\+000A"]),
    ("label_not_nfc.toml", [r"labels\.names", r"NFC"]),
    ("label_surrounding_space.toml", [r"labels\.names", r"whitespace"]),
    ("duplicate_header_column.csv", [r"line 1 \(header\)", r"column 'text' \(text_col\) appears 2 times", r"columns 2, 4"]),
    ("duplicate_header_column_quoted.csv", [r"line 1 \(header\)", r"column 'text' \(text_col\) appears 2 times"]),
    ("unknown_encoding_key.toml", [r"data\.encoding", r"unknown encoding 'utf-9'"]),
    ("unsupported_delimiter_key.toml", [r"data\.delimiter", r"'::'"]),
]

# Files `labelloop simulate --data FILE --id-col id` must refuse (the label set and config keys
# do not exist there; every unreadable file and every pool-contract breach does).
SIMULATE_CASES = [name for name, _ in SETUP_CASES
                  if not name.endswith(".toml") and name not in ("labels_outside_set.csv",
                                                                 "stratified_missing_labels.csv")]

# Through the real entry point (a subprocess each, ~10 s of imports on 2 busy cores): one of each family;
# the first also through `labelloop simulate`.
SUBPROCESS_CASES = ["symlink_loop_a.csv", "xlsx_renamed.csv", "label_too_long.toml"]

# Cases run with a [data] key (simulate: the matching flag) that makes the file wrong.
DATA_KEYS = {"tab_separated_named_csv.csv": {"delimiter": ","}}
GOOD_DATA = BAD / "mixed_folder" / "a_pool.csv"  # readable: config-fragment cases fail on the config alone


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string (control characters escaped)


def _campaign(folder: Path, case: str) -> Path:
    """A campaign folder holding only campaign.toml (workdir `work`, not created yet)."""
    import tomllib

    data = GOOD_DATA if case.endswith(".toml") else BAD / case
    fragment = tomllib.loads((BAD / case).read_text(encoding="utf-8")) if case.endswith(".toml") else {}
    labels = fragment.get("labels", {}).get("names", ["pos", "neg"])
    keys = {**DATA_KEYS.get(case, {}), **fragment.get("data", {})}
    data_keys = "".join(f"{k} = {_toml_str(v)}\n" for k, v in keys.items())
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "campaign.toml"
    cfg.write_text(
        f'name = "bad"\nworkdir = "work"\n[data]\npath = {_toml_str(str(data))}\n{data_keys}'
        f'[labels]\nnames = [{", ".join(_toml_str(x) for x in labels)}]\n'
        '[splits]\ntest_size = 2\ncalibration_size = 2\nseed_size = 2\nseed_method = "stratified"\n'
        '[query]\nbatch_size = 2\n[budget]\nmax_labels = 10\n', encoding="utf-8")
    return cfg


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (symlinks as links) with a hash of its bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module", autouse=True)
def corpus_untouched():
    before = _snapshot(BAD)
    yield
    assert _snapshot(BAD) == before, "a command wrote into tests/data/bad_inputs"


def _run_in_process(capsys, argv: list[str]) -> tuple[int, str, str]:
    from labelloop.flows.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _check(code: int, out: str, err: str, case: str, patterns: list[str]) -> None:
    text = out + err
    assert code == 2, f"{case}: exit {code}\n{text}"
    assert "Traceback" not in text, text
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), text
    first = lines[0]
    if case.endswith(".toml"):
        assert "campaign.toml" in first, first  # config errors name the config file ...
        body = "\n".join(lines)  # ... and the key on the next line(s)
    else:
        assert case in first or Path(case).stem in first, first  # names the file
        assert len(lines) == 1, f"{case}: more than one line on stderr:\n{err}"
        body = first
    for pattern in patterns:
        assert re.search(pattern, body), f"{case}: {pattern!r} not in {body!r}"
    assert text.count(first.removeprefix("error: ")[:60]) == 1, f"{case}: error printed more than once:\n{text}"
    assert "labelloop-setup" not in text and "Starting temporary server" not in text  # no Prefect run began


@pytest.mark.parametrize("case, patterns", SETUP_CASES, ids=[c for c, _ in SETUP_CASES])
def test_setup_refuses_bad_input_and_writes_nothing(case: str, patterns: list[str], tmp_path: Path, capsys) -> None:
    cfg = _campaign(tmp_path / "c", case)
    before = _snapshot(tmp_path)
    code, out, err = _run_in_process(capsys, ["setup", str(cfg)])
    _check(code, out, err, case, patterns)
    assert _snapshot(tmp_path) == before, "setup changed the campaign folder"
    assert not (tmp_path / "c" / "work").exists()


@pytest.mark.parametrize("case", SIMULATE_CASES)
def test_simulate_refuses_bad_input_and_writes_nothing(case: str, tmp_path: Path, capsys) -> None:
    patterns = dict(SETUP_CASES)[case]
    before = _snapshot(tmp_path)
    flags = [f"--{k}={v}" for k, v in DATA_KEYS.get(case, {}).items()]
    code, out, err = _run_in_process(capsys, ["simulate", "--data", str(BAD / case), "--id-col", "id",
                                              "--out", str(tmp_path / "sim"), *flags])
    _check(code, out, err, case, patterns)
    assert _snapshot(tmp_path) == before and not (tmp_path / "sim").exists()


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_real_entry_point_refuses_bad_input(case: str, tmp_path: Path) -> None:
    patterns = dict(SETUP_CASES)[case]
    cfg = _campaign(tmp_path / "c", case)
    before = _snapshot(tmp_path)
    res = run_cli("setup", str(cfg), timeout=120)
    _check(res.returncode, res.stdout, res.stderr, case, patterns)
    if case == SUBPROCESS_CASES[0]:
        res = run_cli("simulate", "--data", str(BAD / case), "--id-col", "id", "--out", str(tmp_path / "sim"),
                      timeout=120)
        _check(res.returncode, res.stdout, res.stderr, case, patterns)
    assert _snapshot(tmp_path) == before


def test_every_bad_input_kind_is_run_through_the_commands() -> None:
    """The corpus has >= 35 kinds, and every one a campaign could be handed is in SETUP_CASES."""
    kinds = {p.name for p in BAD.iterdir() if p.name != "README.md"}
    kinds.discard("symlink_loop_b.csv")  # the other half of the loop
    assert len(kinds) >= 35, sorted(kinds)
    not_for_setup = {k for k in kinds if k.startswith(("annotations_", "training_", "label_set_"))}
    covered = {c for c, _ in SETUP_CASES}
    assert kinds - not_for_setup - covered == set(), "corpus files no command test runs"


def test_sniffed_and_configured_delimiters_and_encodings_load(tmp_path: Path) -> None:
    """The positive side of the cases above: the hint in each error works."""
    from labelloop.integrations.sources import load_table

    kw = {"id_col": "id", "text_col": "text", "label_col": "label"}
    assert load_table(BAD / "tab_separated_named_csv.csv", **kw)["text"].tolist() == ["some text", "more text"]
    assert load_table(BAD / "utf16_bom.csv", encoding="utf-16", **kw)["id"].tolist() == ["r1", "r2"]
    assert load_table(BAD / "utf32_bom.csv", encoding="utf-32", **kw)["id"].tolist() == ["r1", "r2"]
    assert load_table(BAD / "utf16_no_bom.csv", encoding="utf-16-le", **kw)["label"].tolist() == ["pos", "neg"]
    mixed = load_table(BAD / "mixed_folder", skip_unsupported=True, **kw)
    assert mixed["id"].tolist() == ["r1", "r2", "r3"] and mixed.attrs["skipped_files"] == ["c_notes.txt", "d_logo.png"]
    good = tmp_path / "semi.csv"
    good.write_text('id;text;label\nr1;"hello, world; again";pos\nr2;refund;neg\n', encoding="utf-8")
    assert load_table(good, **kw)["text"].tolist() == ["hello, world; again", "refund"]


def test_unreachable_label_studio_is_found_before_the_first_write(tmp_path: Path) -> None:
    """Label Studio is reached in preflight: a server that is not there leaves the folder as it was."""
    from tests.conftest import free_port

    data = tmp_path / "pool.csv"
    data.write_text("id,text,label\n" + "".join(f"r{i},ticket number {i} about {'refunds' if i % 2 else 'parcels'},"
                                                 f"{'pos' if i % 2 else 'neg'}\n" for i in range(40)), encoding="utf-8")
    folder = tmp_path / "c"
    folder.mkdir()
    cfg = folder / "campaign.toml"
    port = free_port()  # nothing listens here
    cfg.write_text(f'name = "ls-down"\nworkdir = "work"\n[data]\npath = {_toml_str(str(data))}\n'
                   '[labels]\nnames = ["pos", "neg"]\n[splits]\ntest_size = 6\ncalibration_size = 6\nseed_size = 4\n'
                   '[query]\nbatch_size = 4\n[budget]\nmax_labels = 20\n'
                   f'[annotation]\nbackend = "label_studio"\n[annotation.label_studio]\nurl = "http://127.0.0.1:{port}"\n',
                   encoding="utf-8")
    before = _snapshot(folder)
    # the real entry point: its retry warnings go to a real terminal stream, not pytest's capture
    res = run_cli("setup", str(cfg), env={"LABEL_STUDIO_API_KEY": "not-a-real-token"}, timeout=300)
    code, out, err = res.returncode, res.stdout, res.stderr
    assert code == 2, out + err
    assert "Traceback" not in out + err and "not-a-real-token" not in out + err
    assert f"127.0.0.1:{port}" in err, err
    assert (out + err).count("did not answer") == 1, "the error is printed once"
    assert "the campaign folder is unchanged" in err
    assert _snapshot(folder) == before and not (folder / "work").exists()


def test_a_failure_after_the_first_write_says_what_was_kept(tmp_path: Path) -> None:
    """When the backend fails mid-set-up (after items went in), the one error line says what the
    ledger keeps and that re-running resumes."""
    from labelloop.flows.runtime import open_campaign
    from labelloop.flows.setup import _say_what_was_kept
    from labelloop.integrations.backend import BackendError

    cfg = _campaign(tmp_path / "c", "mixed_folder")
    c = open_campaign(cfg)
    try:
        c.ledger.add_items(__import__("pandas").DataFrame(
            {"id": ["r1", "r2"], "text": ["a", "b"], "label": ["pos", "neg"], "split": ["pool", "seed"]}))
        err = BackendError("Label Studio at http://127.0.0.1:1 did not answer")
        _say_what_was_kept(c, err)
        message = str(err)
        assert message.startswith("Label Studio at http://127.0.0.1:1 did not answer")
        assert "keeps 2 items" in message and "not marked set up" in message
        assert "Re-run `labelloop setup` to resume" in message
        _say_what_was_kept(c, err)
        assert str(err) == message, "said once"
    finally:
        c.ledger.dispose()


def test_missing_data_file_fails_before_pandas_is_imported(tmp_path: Path) -> None:
    """The commonest mistake answers fastest (issue 18: < 3 s): one line, exit 2, and neither pandas nor
    Great Expectations was loaded for it (the existence check comes before them)."""
    import subprocess
    import sys

    from labelloop.flows.config import example_config

    cfg = tmp_path / "c.toml"
    cfg.write_text(example_config(name="gone"), encoding="utf-8")  # [data] path = "pool.csv", not there
    code = ("import sys\nfrom labelloop.flows.cli import main\nrc = main(sys.argv[1:])\n"
            "print('loaded:', sorted(m for m in ('pandas', 'great_expectations') if m in sys.modules))\n"
            "sys.exit(rc)\n")
    res = subprocess.run([sys.executable, "-c", code, "setup", str(cfg)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PREFECT_API_URL": ""})
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == f"error: {tmp_path / 'pool.csv'}: no such file or folder"
    assert "loaded: []" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # nothing written
