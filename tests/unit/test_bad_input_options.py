"""Bad values in config keys and command-line options: exit 2, one message naming the key or flag, nothing written.

A review of the command line found values that were coerced (`batch_size = true` became 1), accepted
and then failed deep inside (`C = inf`, `--seeds 0`, `--random-state -1`: "internal error"), or
refused only after minutes of work (`simulate --out` an existing file). Each case here runs
``flows.cli.main`` in-process (no server, no subprocess) and checks the folder is byte-for-byte
unchanged afterwards.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from tests.unit.test_bad_input_commands import GOOD_DATA, _run_in_process, _snapshot


def _config(folder: Path, **override: Any) -> Path:
    """A valid campaign (workdir `work`, not created), with ``override`` merged in per section."""
    data: dict[str, Any] = {
        "name": "opts", "workdir": "work", "data": {"path": str(GOOD_DATA)}, "labels": {"names": ["pos", "neg"]},
        "splits": {"test_size": 2, "calibration_size": 2, "seed_size": 2}, "query": {"batch_size": 2},
        "budget": {"max_labels": 10},
    }
    for key, value in override.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "campaign.toml"
    cfg.write_text(tomlkit.dumps(data), encoding="utf-8")
    return cfg


CONFIG_CASES: list[tuple[str, dict, list[str]]] = [
    ("bool-for-int", {"query": {"batch_size": True}}, [r"query\.batch_size", r"integer"]),
    ("string-for-int", {"query": {"batch_size": "2"}}, [r"query\.batch_size", r"integer"]),
    ("string-for-bool", {"query": {"random_arm": "yes"}}, [r"query\.random_arm", r"boolean"]),
    ("infinite-C", {"model": {"C": math.inf}}, [r"model\.C", r"finite"]),
    ("negative-random-state", {"splits": {"random_state": -1}}, [r"splits\.random_state", r"greater than or equal to 0"]),
    ("codec-not-text", {"data": {"encoding": "rot13"}}, [r"data\.encoding", r"rot13"]),
    ("empty-text-column", {"data": {"text_column": ""}}, [r"data\.text_column", r"at least 1 character"]),
    ("overlap-above-people", {"annotation": {"backend": "simulated", "overlap": 3, "simulated": {
        "annotators": [{"name": "a", "accuracy": 0.9}, {"name": "b", "accuracy": 0.9}]}}},
     [r"^  - annotation\.overlap \(3\) asks for more answers per item than annotation\.simulated has annotators \(2\)"]),
    ("batch-above-budget", {"query": {"batch_size": 50}},
     [r"^  - query\.batch_size \(50\) is larger than budget\.max_labels \(10\)$"]),
]


@pytest.mark.parametrize("case, override, patterns", CONFIG_CASES, ids=[c for c, _, _ in CONFIG_CASES])
def test_config_values_are_checked_not_coerced(case: str, override: dict, patterns: list[str], tmp_path: Path,
                                               capsys) -> None:
    cfg = _config(tmp_path / "c", **override)
    before = _snapshot(tmp_path)
    code, out, err = _run_in_process(capsys, ["setup", str(cfg)])
    assert code == 2, (case, code, out, err)
    assert err.startswith("error: invalid campaign config") and "campaign.toml" in err.splitlines()[0], err
    assert "Traceback" not in out + err and "(top level)" not in err and "Value error" not in err, err
    for pattern in patterns:
        assert re.search(pattern, err, re.M), (case, pattern, err)
    assert _snapshot(tmp_path) == before


def test_a_workdir_that_is_a_file_is_named(tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path / "c")
    (tmp_path / "c" / "work").write_text("not a folder", encoding="utf-8")
    code, _, err = _run_in_process(capsys, ["setup", str(cfg)])
    assert code == 2 and re.search(r"workdir: .*work is a file, not a folder", err), err


def test_an_empty_id_column_means_ids_from_the_text(tmp_path: Path) -> None:
    """TOML has no null: `id_column = ""` is how a config asks for hashed ids (as the template says)."""
    from labelloop.flows.config import load_config

    assert load_config(_config(tmp_path, data={"id_column": ""})).data.id_column is None
    assert load_config(_config(tmp_path)).data.id_column == "id"
    assert 'id_column = "id"           # "" derives ids' in (
        Path(__file__).resolve().parents[2] / "flows" / "templates" / "campaign.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("labels, name, pattern", [
    ("a", "ok", r"at least 2 labels"), ("a,a", "ok", r"duplicate label names"), ("a,,b", "ok", r"non-empty"),
    ("a,b", "bad name", r"name: String should match pattern"),
])
def test_init_never_writes_a_config_setup_refuses(labels: str, name: str, pattern: str, tmp_path: Path,
                                                  capsys) -> None:
    code, _, err = _run_in_process(capsys, ["init", str(tmp_path / "c.toml"), "--labels", labels, "--name", name])
    assert code == 2 and err.startswith("error: nothing written") and re.search(pattern, err), err
    assert not (tmp_path / "c.toml").exists()


SIMULATE_OPTIONS = [
    (["--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
    (["--batch-size", "-3"], r"--batch-size must be >= 1"),
    (["--seeds", "0"], r"--seeds must be >= 1"),
    (["--budget", "-5"], r"--budget must be >= 1"),
    (["--seed-size", "100"], r"--seed-size must be between 1 and --budget \(45\), got 100"),
    (["--seed-size", "0"], r"--seed-size must be between 1"),
    (["--test-size", "0"], r"--test-size must be >= 1"),
    (["--test-size", "-5"], r"--test-size must be >= 1"),
    (["--random-state", "-1"], r"--random-state must be >= 0"),
    (["--encoding", "rot13"], r"--encoding: 'rot13' is not a text encoding"),
    (["--encoding", "utf-9"], r"--encoding: 'utf-9' is not a text encoding"),
]


@pytest.mark.parametrize("flags, pattern", SIMULATE_OPTIONS, ids=[" ".join(f) for f, _ in SIMULATE_OPTIONS])
def test_simulate_refuses_impossible_options_before_any_work(flags: list[str], pattern: str, tmp_path: Path,
                                                            capsys) -> None:
    before = _snapshot(tmp_path)
    code, out, err = _run_in_process(capsys, ["simulate", "--data", str(GOOD_DATA), "--budget", "45",
                                              "--batch-size", "15", "--out", str(tmp_path / "sim"), *flags])
    assert code == 2 and re.search(pattern, err) and len(err.strip().splitlines()) == 1, (code, out, err)
    assert "Traceback" not in out + err and _snapshot(tmp_path) == before


def test_simulate_refuses_an_out_that_is_a_file_before_simulating(tmp_path: Path, capsys) -> None:
    taken = tmp_path / "results.txt"
    taken.write_text("keep me", encoding="utf-8")
    code, out, err = _run_in_process(capsys, ["simulate", "--data", str(GOOD_DATA), "--out", str(taken)])
    assert code == 2 and f"--out {taken}: exists and is not a folder" in err, (code, out, err)
    assert "simulating" not in out and taken.read_text(encoding="utf-8") == "keep me"


@pytest.mark.parametrize("flags, pattern", [
    (["--rounds", "0"], r"--rounds must be >= 1"), (["--rounds", "-1"], r"--rounds must be >= 1"),
    (["--poll-interval", "-1"], r"--poll-interval must be > 0"), (["--poll-interval", "nan"], r"--poll-interval"),
    (["--timeout", "-5"], r"--timeout must be >= 0"), (["--timeout", "inf"], r"--timeout must be >= 0"),
])
def test_run_refuses_impossible_options(flags: list[str], pattern: str, tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path / "c")
    before = _snapshot(tmp_path)
    code, _, err = _run_in_process(capsys, ["run", str(cfg), *flags])
    assert code == 2 and re.search(pattern, err), err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("flags, pattern", [
    (["--reason", " "], r"--reason is empty"),
    (["--reason", "x", "--score", "psi=nan"], r"a finite number"),
    (["--reason", "x", "--score", "psi=inf"], r"a finite number"),
    (["--reason", "x", "--score", "psi=1", "--score", "psi=2"], r"--score psi is given twice"),
])
def test_drift_alert_refuses_bad_arguments(flags: list[str], pattern: str, tmp_path: Path, capsys,
                                           monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens: nothing may be sent
    cfg = _config(tmp_path / "c")
    before = _snapshot(tmp_path)
    code, _, err = _run_in_process(capsys, ["drift-alert", str(cfg), *flags])
    assert code == 2 and re.search(pattern, err), err
    assert _snapshot(tmp_path) == before


def test_export_names_out_not_its_temp_file(tmp_path: Path) -> None:
    import pandas as pd

    from labelloop.flows.export import ExportError, write_atomically

    frame = pd.DataFrame({"item_id": ["a"], "label": ["pos"]})
    for out, pattern in ((tmp_path, r"--out .*: is a folder; name the file"),
                         (Path(""), r"--out .*: is a folder"),
                         (Path("/proc/labels.csv"), r"^cannot write /proc/labels\.csv: ")):
        with pytest.raises(ExportError, match=pattern) as err:
            write_atomically(frame, out, "csv")
        assert ".tmp" not in str(err.value), err.value
    assert list(tmp_path.iterdir()) == []


def test_demo_sizes_its_splits_to_n_and_refuses_what_cannot_fit(tmp_path: Path, capsys) -> None:
    from labelloop.flows.demo import demo_splits

    assert demo_splits(3000, budget=200, batch_size=30)["splits.test_size"] == 500  # the template's, as before
    small = demo_splits(600, budget=90, batch_size=30)
    assert (small["splits.test_size"], small["splits.calibration_size"]) == (120, 60)
    assert small["splits.min_test_labels"] <= small["splits.test_size"]
    code, _, err = _run_in_process(capsys, ["demo", "--backend", "simulated", "--dir", str(tmp_path / "d"),
                                            "--n", "60", "--budget", "90"])
    assert code == 2 and "--n 60 texts cannot hold" in err and "--n 131 or more" in err, err
    assert not (tmp_path / "d").exists()


def test_simulate_says_which_rows_it_left_out(tmp_path: Path) -> None:
    """Rows without a label and repeated texts are not simulated on: the header line says how many."""
    import pandas as pd

    from labelloop.flows.simulate import load_simulation_data

    rows = [{"id": f"r{i}", "text": f"text {i % 8}", "label": ["pos", "neg"][i % 2] if i < 10 else ""} for i in range(12)]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    frame = load_simulation_data(str(tmp_path / "d.csv"), id_col="id")
    assert len(frame) == 8 and frame.attrs["left_out"] == {"without a label": 2, "repeating an earlier text": 2}


def test_the_terminal_gets_the_calibrated_ece_and_no_event_queue_chatter() -> None:
    """Two lines of output this pass changed: the round line's ECE (before->after, the gate reads the second)
    and Prefect's "Still processing items" while its event queue drains at exit (kept off the terminal)."""
    import logging

    from labelloop.flows.logs import _ephemeral_event_noise
    from labelloop.flows.round import _ece_text

    assert _ece_text(0.2631, 0.06) == " ECE=0.263->0.060" and _ece_text(0.28, None) == " ECE=0.280"
    assert _ece_text(None, None) == " ECE=n/a" and _ece_text(float("nan"), 0.1) == " ECE=n/a"

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)

    assert _ephemeral_event_noise(record("EventsWorker", "Still processing items: 1 items remaining..."))
    assert not _ephemeral_event_noise(record("EventsWorker", "Something else went wrong"))
    assert not _ephemeral_event_noise(record("labelloop", "Still processing items: it is ours"))
