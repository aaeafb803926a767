"""Tests for integrations/sources.py: good inputs in every format give the same frame,
and every unreadable file in tests/data/bad_inputs gives an InputError that says where.

No Great Expectations import here (load_label_set's checks are pure Python), so this
module runs in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelloop.integrations.expectations import DataContractError, load_label_set
from labelloop.integrations.sources import (
    OUTPUT_COLUMNS,
    InputError,
    derive_id,
    load_table,
    normalise_id,
)

BAD = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"

# Awkward but valid content: commas, quotes, a newline inside a text, non-ASCII,
# the literal strings "NA"/"null" as texts, a missing label, an id with spaces.
ROWS = [
    {"id": "a1", "text": "plain text", "label": "pos"},
    {"id": "a2", "text": 'has, a comma and "quotes"', "label": "neg"},
    {"id": "a3", "text": "two\nlines", "label": None},
    {"id": " a4 ", "text": "café naïve 東京", "label": "pos"},
    {"id": "a5", "text": "NA", "label": "neg"},
    {"id": "a6", "text": "null", "label": None},
]
EXPECTED = pd.DataFrame(
    {
        "id": ["a1", "a2", "a3", "a4", "a5", "a6"],
        "text": [r["text"] for r in ROWS],
        "label": [r["label"] for r in ROWS],
    },
    dtype=object,
)


def _write_csv(path: Path, rows: list[dict], sep: str = ",") -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, sep=sep)
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _core(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["id", "text", "label"]].reset_index(drop=True)


# --------------------------------------------------------------------------- good inputs


@pytest.mark.parametrize(
    "name, writer",
    [
        ("pool.csv", _write_csv),
        ("pool.tsv", lambda p, r: _write_csv(p, r, sep="\t")),
        ("pool.parquet", _write_parquet),
        ("pool.pq", _write_parquet),
        ("pool.jsonl", _write_jsonl),
        ("pool.ndjson", _write_jsonl),
    ],
)
def test_every_format_loads_to_the_same_frame(tmp_path: Path, name: str, writer) -> None:
    path = writer(tmp_path / name, ROWS)
    frame = load_table(path, id_col="id", text_col="text", label_col="label")
    assert list(frame.columns) == OUTPUT_COLUMNS
    pd.testing.assert_frame_equal(_core(frame), EXPECTED)
    assert frame["source_file"].unique().tolist() == [str(path)]
    assert frame["source_row"].dtype == "int64"
    # CSV counts records (a3's two-line text is one record, so a4 is data row 4 although
    # it starts on file line 6); JSONL counts physical lines (json escapes the newline).
    assert frame["source_row"].tolist() == [1, 2, 3, 4, 5, 6]
    # missing labels are None (not NaN, not ""), whatever the format
    assert frame.loc[2, "label"] is None and frame.loc[5, "label"] is None


def test_folder_of_mixed_files_concatenates_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    folder.mkdir()
    _write_parquet(folder / "b.parquet", ROWS[2:4])
    _write_csv(folder / "a.csv", ROWS[:2])
    _write_jsonl(folder / "c.jsonl", ROWS[4:])
    (folder / "notes.md").write_text("skipped only when asked: not a table")
    (folder / ".hidden.csv").write_text("id,text\nx,ignored hidden file\n")
    with pytest.raises(InputError, match=r"pool: folder holds entries labelloop does not read: 'notes\.md'"):
        load_table(folder, id_col="id", text_col="text", label_col="label")
    frame = load_table(folder, id_col="id", text_col="text", label_col="label", skip_unsupported=True)
    assert frame.attrs["skipped_files"] == ["notes.md"]
    pd.testing.assert_frame_equal(_core(frame), EXPECTED)
    assert [Path(p).name for p in frame["source_file"]] == ["a.csv"] * 2 + ["b.parquet"] * 2 + ["c.jsonl"] * 2
    assert frame["source_row"].tolist() == [1, 2, 1, 2, 1, 2]
    assert frame.index.tolist() == list(range(6))


def test_folder_with_one_bad_file_fails_whole_load_and_names_that_file(tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    folder.mkdir()
    _write_csv(folder / "a.csv", ROWS[:2])
    (folder / "b.jsonl").write_text('{"id": "x", "text": "ok"}\n{"id": "y", "text": \n')
    with pytest.raises(InputError) as err:
        load_table(folder, id_col="id", text_col="text")
    assert "b.jsonl" in str(err.value) and "line 2" in str(err.value)
    assert err.value.line == 2


def test_folder_without_tables_lists_what_it_contains(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(InputError, match=r"no \.csv/.*files.*readme\.md"):
        load_table(tmp_path, id_col="id", text_col="text")


def test_without_id_column_ids_are_stable_text_hashes(tmp_path: Path) -> None:
    rows = [{"text": "same text"}, {"text": "  same text "}, {"text": "other text"}]
    csv_frame = load_table(_write_csv(tmp_path / "p.csv", rows), id_col=None, text_col="text")
    pq_frame = load_table(_write_parquet(tmp_path / "p.parquet", rows), id_col=None, text_col="text")
    ids = csv_frame["id"].tolist()
    assert ids == pq_frame["id"].tolist()  # independent of the file format
    assert re.fullmatch(r"txt-[0-9a-f]{16}", ids[0])
    assert ids[0] == ids[1] != ids[2]  # whitespace variants collide → contract reports them
    assert ids[0] == derive_id("same text") == "txt-" + hashlib.sha256(b"same text").hexdigest()[:16]
    assert csv_frame["label"].tolist() == [None, None, None]  # no label column asked for


def test_ids_are_normalised_but_not_merged(tmp_path: Path) -> None:
    path = BAD / "ids_collide_after_normalisation.csv"
    frame = load_table(path, id_col="id", text_col="text", label_col="label")
    assert len(frame) == 5  # nothing dropped or merged
    assert frame["id"].tolist() == ["a1", "a1", "café", "café", "b2"]
    assert normalise_id("cafe\u0301 ") == "café" and normalise_id("   ") is None and normalise_id(7) == "7"


def test_blank_ids_become_missing_not_empty_strings() -> None:
    frame = load_table(BAD / "missing_ids.csv", id_col="id", text_col="text")
    assert frame["id"].tolist() == ["r1", None, None]


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffid,text\nx1,hello\n".encode("utf-8"))
    jpath = tmp_path / "bom.jsonl"
    jpath.write_bytes('\ufeff{"id": "x1", "text": "hello"}\n'.encode("utf-8"))
    for p in (path, jpath):
        frame = load_table(p, id_col="id", text_col="text")
        assert frame[["id", "text"]].values.tolist() == [["x1", "hello"]]


def test_suggested_encoding_fixes_the_latin1_file() -> None:
    frame = load_table(BAD / "latin1_encoded.csv", id_col="id", text_col="text", encoding="latin-1")
    assert frame["text"].tolist() == ["plain ascii", "café crème brûlée"]


def test_parquet_numeric_ids_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"id": pa.array([10, 11, None], pa.int64()), "text": ["a", "b", "c"]}), path)
    frame = load_table(path, id_col="id", text_col="text")
    assert frame["id"].tolist() == ["10", "11", None]


def test_jsonl_key_missing_on_some_lines_is_a_missing_value(tmp_path: Path) -> None:
    path = tmp_path / "partial.jsonl"
    path.write_text('{"id": "x1", "text": "a", "label": "pos"}\n\n{"id": "x2", "text": "b"}\n')
    frame = load_table(path, id_col="id", text_col="text", label_col="label")
    assert frame["label"].tolist() == ["pos", None]
    assert frame["source_row"].tolist() == [1, 3]  # blank line 2 still counted


def test_multiline_csv_records_keep_data_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "ml.csv"
    path.write_text('id,text\nx1,"line one\nline two\nline three"\nx2,after\n')
    frame = load_table(path, id_col="id", text_col="text")
    assert frame["source_row"].tolist() == [1, 2]
    assert frame.loc[0, "text"] == "line one\nline two\nline three"


def test_label_set_file_is_normalised(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(" pos\nneg \nneutral\n\n\n")
    assert load_label_set(path) == ["pos", "neg", "neutral"]
    jpath = tmp_path / "labels.json"
    jpath.write_text('["pos", "neg"]')
    assert load_label_set(jpath) == ["pos", "neg"]


# --------------------------------------------------------------------------- bad inputs

# (file, load_table kwargs, regexes the message must match, InputError.line)
LOAD_ERRORS = [
    ("unbalanced_quote.csv", {}, [r"unbalanced_quote\.csv", r"line 3 \(data row 2\)", r"never closed"], 3),
    ("wrong_field_count.csv", {}, [r"wrong_field_count\.csv", r"line 5 \(data row 3\)", r"4 fields.*header has 3"], 5),
    ("malformed_line.jsonl", {}, [r"malformed_line\.jsonl", r"line 4\b", r"not valid JSON", r"missing brace"], 4),
    ("not_an_object.jsonl", {}, [r"not_an_object\.jsonl", r"line 2\b", r"JSON object.*got list"], 2),
    ("nested_value.jsonl", {}, [r"nested_value\.jsonl", r"line 2\b", r"field 'text'", r"got dict"], 2),
    ("latin1_encoded.csv", {}, [r"latin1_encoded\.csv", r"byte offset 39", r"line 3\b", r"bytes e9",
                                r"\[data\] encoding = \"latin-1\"", r"--encoding latin-1"], 3),
    ("missing_text_column.csv", {}, [r"missing_text_column\.csv", r"missing column\(s\) 'text' \(text_col\)",
                                     r"available columns: 'id', 'body', 'label'"], None),
    ("tab_separated_named_csv.csv", {"delimiter": ","}, [r"tab_separated_named_csv\.csv", r"'text' \(text_col\)",
                                                       r"delimiter ',' \(comma\) the header is one column",
                                                       r"tab-separated: set \[data\] delimiter = '\\t'"], None),
    ("semicolon_delimited.csv", {}, [r"semicolon_delimited\.csv", r"line 3 \(data row 2\): 4 fields",
                                     r"delimiter ';' \(semicolon\)"], 3),
    ("utf16_bom.csv", {}, [r"utf16_bom\.csv", r"UTF-16-LE text", r"encoding = \"utf-16\""], None),
    ("utf32_bom.csv", {}, [r"utf32_bom\.csv", r"UTF-32-LE text", r"encoding = \"utf-32\""], None),
    ("utf16_no_bom.csv", {}, [r"utf16_no_bom\.csv", r"NUL byte at byte offset 1"], None),
    ("xlsx_renamed.csv", {}, [r"xlsx_renamed\.csv", r"an Excel workbook \(\.xlsx"], None),
    ("parquet_named.csv", {}, [r"parquet_named\.csv", r"a Parquet file, not a CSV file"], None),
    ("gzip_named.csv", {}, [r"gzip_named\.csv", r"gzip-compressed"], None),
    ("image_named.csv", {}, [r"image_named\.csv", r"a PNG image"], None),
    ("int_text_column.parquet", {}, [r"int_text_column\.parquet", r"holds int64 values, not texts"], None),
    ("number_text.jsonl", {}, [r"number_text\.jsonl", r"line 2, field 'text'", r"got int 42"], 2),
    ("symlink_loop_a.csv", {}, [r"symlink_loop_a\.csv", r"symbolic link loop"], None),
    ("mixed_folder", {}, [r"mixed_folder", r"'c_notes\.txt', 'd_logo\.png'"], None),
    ("empty.csv", {}, [r"empty\.csv", r"file is empty \(0 bytes\)"], None),
    ("header_only.csv", {}, [r"header_only\.csv", r"header \('id', 'text', 'label'\) but no data rows"], None),
    ("blank_lines_only.jsonl", {}, [r"blank_lines_only\.jsonl", r"no JSON records"], None),
    ("pool.txt", {}, [r"pool\.txt", r"unknown file type '\.txt'", r"supported: \.csv, \.tsv, \.parquet"], None),
    ("corrupt.parquet", {}, [r"corrupt\.parquet", r"not a readable Parquet file"], None),
    ("does_not_exist.csv", {}, [r"does_not_exist\.csv", r"no such file"], None),
]


@pytest.mark.parametrize("name, kwargs, patterns, line", LOAD_ERRORS, ids=[c[0] for c in LOAD_ERRORS])
def test_unreadable_inputs_raise_input_error_saying_where(name: str, kwargs: dict, patterns: list[str], line) -> None:
    path = BAD / name
    with pytest.raises(InputError) as err:
        load_table(path, **{"id_col": "id", "text_col": "text", "label_col": "label", **kwargs})
    message = str(err.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    assert "Traceback" not in message and "\n" not in message
    assert err.value.path == str(path)
    assert err.value.line == line
    assert isinstance(err.value, ValueError)  # callers catching ValueError still work


def test_unknown_encoding_name_is_an_input_error(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "p.csv", ROWS)
    with pytest.raises(InputError, match=r"unknown encoding 'utf-9'"):
        load_table(path, id_col="id", text_col="text", encoding="utf-9")


def test_missing_label_column_lists_available_columns_for_parquet(tmp_path: Path) -> None:
    path = _write_parquet(tmp_path / "p.parquet", [{"id": "x", "text": "t", "gold": "pos"}])
    with pytest.raises(InputError, match=r"p\.parquet: missing column\(s\) 'label' \(label_col\); available columns: 'id', 'text', 'gold'"):
        load_table(path, id_col="id", text_col="text", label_col="label")


def test_missing_column_in_jsonl_lists_keys_seen(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": "x", "body": "t"}, {"id": "y", "body": "u", "extra": 1}])
    with pytest.raises(InputError, match=r"'text' \(text_col\); available columns: 'id', 'body', 'extra'"):
        load_table(path, id_col="id", text_col="text")


def test_header_only_parquet_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), path)
    with pytest.raises(InputError, match=r"empty\.parquet: has columns .* but no data rows"):
        load_table(path, id_col="id", text_col="text")


def test_decode_error_far_into_a_file_reports_the_file_offset(tmp_path: Path) -> None:
    # pandas reads in chunks; the offset must be the file's, not the chunk's.
    good = "".join(f"r{i},text number {i}\n" for i in range(20_000))
    path = tmp_path / "late.csv"
    path.write_bytes(b"id,text\n" + good.encode() + "rX,caf\xe9\n".encode("latin-1"))
    offset = len(b"id,text\n" + good.encode()) + len(b"rX,caf")
    with pytest.raises(InputError) as err:
        load_table(path, id_col="id", text_col="text")
    assert f"byte offset {offset} (line 20002)" in str(err.value)


@pytest.mark.parametrize(
    "name, patterns",
    [
        ("label_set_duplicates.txt", [r"label_set_duplicates\.txt", r"'pos' at line 4 duplicates 'pos' at line 1",
                                      r"'Neg' at line 5 duplicates 'neg' at line 2"]),
        ("label_set_empty_name.txt", [r"label_set_empty_name\.txt", r"empty or whitespace-only label name at line 2, 4"]),
    ],
)
def test_bad_label_set_files(name: str, patterns: list[str]) -> None:
    with pytest.raises(DataContractError) as err:
        load_label_set(BAD / name)
    for pattern in patterns:
        assert re.search(pattern, str(err.value)), str(err.value)


def test_every_corpus_file_is_exercised() -> None:
    """A file added to the corpus without a test would give false confidence."""
    here = Path(__file__).parent
    tests_text = "".join((here / name).read_text() for name in (
        "test_sources.py", "test_expectations.py", "test_bad_input_commands.py"))
    corpus = [p for p in BAD.iterdir() if p.name != "README.md"]
    assert len(corpus) >= 35
    unused = [p.name for p in corpus if p.name not in tests_text and p.name != "symlink_loop_b.csv"]
    assert not unused, f"corpus files without a test: {unused}"
    files = [f for p in corpus for f in ([p] if not p.is_dir() else list(p.iterdir())) if not f.is_symlink()]
    too_big = [p.name for p in files if p.stat().st_size > 4096]
    assert not too_big, f"corpus files should stay small: {too_big}"
    readme = (BAD / "README.md").read_text()
    assert not [p.name for p in corpus if p.name not in readme], "README.md must describe every corpus file"


def test_missing_csv_column_fails_on_the_header_before_any_row_is_parsed(tmp_path, monkeypatch):
    """Issue 18: the column check reads the header line only; pandas never parses the rows."""
    import labelloop.integrations.sources as sources

    path = tmp_path / "big.csv"
    path.write_text("id,body\n" + "".join(f"{i},text {i}\n" for i in range(2000)), encoding="utf-8")

    def no_full_read(*args, **kwargs):
        raise AssertionError("pandas.read_csv called before the header check")

    monkeypatch.setattr(sources.pd, "read_csv", no_full_read)
    with pytest.raises(InputError, match=r"big\.csv: missing column\(s\) 'text' \(text_col\); available columns: 'id', 'body'"):
        load_table(path, id_col="id", text_col="text")


def test_header_only_csv_still_reports_no_data_rows_before_columns(tmp_path):
    """The early header check leaves the old order for a file without rows (its message says so)."""
    path = tmp_path / "head.csv"
    path.write_text("id,body\n", encoding="utf-8")
    with pytest.raises(InputError, match="no data rows"):
        load_table(path, id_col="id", text_col="text")
