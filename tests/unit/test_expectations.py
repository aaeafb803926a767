"""Tests for integrations/expectations.py (Great Expectations data contracts).

The first validation imports GX (~4-6 s); every later one reuses the process-wide
context, so the whole module stays in the tens of seconds at most.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from labelloop.integrations import expectations as ex
from labelloop.integrations.expectations import (
    ContractFailure,
    DataContractError,
    ValidationSummary,
    validate_annotations,
    validate_label_set,
    validate_pool,
    validate_training_set,
)
from labelloop.integrations.sources import InputError, load_table

BAD = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"
LABELS = ["pos", "neg"]
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


def _pool(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"i{i}" for i in range(n)],
            "text": [f"text number {i}" for i in range(n)],
            "label": (["pos", "neg", None] * n)[:n],
            "source_file": ["pool.csv"] * n,
            "source_row": list(range(1, n + 1)),
        }
    )


def _failure(err: DataContractError, expectation: str, column: str | None) -> ContractFailure:
    matches = [f for f in err.failures if f.expectation == expectation and f.column == column]
    assert len(matches) == 1, f"no single {expectation}({column}) in {err.failures}"
    return matches[0]


def _load_bad(name: str) -> pd.DataFrame:
    return load_table(BAD / name, id_col="id", text_col="text", label_col="label")


# --------------------------------------------------------------------------- pool


def test_good_pool_passes_and_summarises() -> None:
    summary = validate_pool(_pool(), label_set=LABELS, source="pool.csv")
    assert isinstance(summary, ValidationSummary)
    assert summary.success and summary.n_rows == 6 and not summary.failures
    names = [r.expectation for r in summary.results]
    assert "expect_column_values_to_be_unique(id)" in names
    assert "expect_column_values_to_be_in_set(label)" in names
    assert all(r.success and r.n_unexpected == 0 for r in summary.results)
    expectation, success, n_unexpected = summary.results[0]  # unpacks as a triple
    assert summary.engine.startswith("great_expectations 1.")


def test_pool_without_label_set_does_not_check_labels() -> None:
    frame = _pool()
    frame.loc[0, "label"] = "anything"
    summary = validate_pool(frame, label_set=None)
    assert not any("label" in r.expectation for r in summary.results)


# (corpus file, expectation, column, n_unexpected, sample ids, regexes on the message)
POOL_CASES = [
    ("empty_texts.csv", "expect_column_values_to_not_match_regex", "text", 2, ["r2", "r4"],
     [r"empty or whitespace-only texts", r"empty_texts\.csv row 2, empty_texts\.csv row 4"]),
    ("whitespace_texts.csv", "expect_column_values_to_not_match_regex", "text", 3, ["r2", "r3", "r4"],
     [r"whitespace_texts\.csv row 4"]),
    ("missing_ids.csv", "expect_column_values_to_not_be_null", "id", 2,
     ["<no id: missing_ids.csv row 2>", "<no id: missing_ids.csv row 3>"], [r"missing or blank ids"]),
    ("duplicate_ids.csv", "expect_column_values_to_be_unique", "id", 4, ["r1", "r2"],
     [r"duplicate_ids\.csv row 1, duplicate_ids\.csv row 2, duplicate_ids\.csv row 3, duplicate_ids\.csv row 5"]),
    ("ids_collide_after_normalisation.csv", "expect_column_values_to_be_unique", "id", 4, ["a1", "café"],
     [r"compared after Unicode NFC \+ strip", r"ids_collide_after_normalisation\.csv row 2"]),
    ("labels_outside_set.csv", "expect_column_values_to_be_in_set", "label", 2, ["r3", "r4"],
     [r"values: 'Pos', 'neutral'", r"labels_outside_set\.csv row 3"]),
]


@pytest.mark.parametrize("name, expectation, column, count, ids, patterns", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pool_contract_names_offending_ids_rows_and_source(name, expectation, column, count, ids, patterns) -> None:
    frame = _load_bad(name)
    with pytest.raises(DataContractError) as err:
        validate_pool(frame, label_set=LABELS, source=name)
    assert len(err.value.failures) == 1, str(err.value)  # exactly the intended rule fires
    failure = _failure(err.value, expectation, column)
    assert failure.n_unexpected == count
    assert failure.sample_ids == ids
    message = str(err.value)
    assert message.startswith(f"pool contract ({name}): {expectation} on column '{column}': {count} unexpected")
    assert "first ids: " + ", ".join(ids) in message
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    # the failed run's report travels with the error, for logging
    assert err.value.summary is not None and not err.value.summary.success


def test_ids_colliding_after_normalisation_are_caught_in_any_frame() -> None:
    frame = _pool(4).drop(columns=["source_file", "source_row"])
    frame.loc[1, "id"] = " i0"
    frame.loc[2, "id"] = "cafe\u0301"
    frame.loc[3, "id"] = "caf\u00e9"
    with pytest.raises(DataContractError) as err:
        validate_pool(frame, label_set=None)
    failure = _failure(err.value, "expect_column_values_to_be_unique", "id")
    assert failure.sample_ids == ["i0", " i0", "cafe\u0301", "caf\u00e9"]  # as given, all four
    assert failure.n_unexpected == 4


def test_ten_megabyte_text_is_rejected_with_its_id_and_length(tmp_path: Path) -> None:
    huge = "x" * 10_000_000
    path = tmp_path / "long.csv"
    path.write_text(f"id,text\nok1,short text\nbig1,{huge}\nok2,fine\n", encoding="utf-8")
    frame = load_table(path, id_col="id", text_col="text")
    with pytest.raises(DataContractError) as err:
        validate_pool(frame, label_set=None, source="long.csv")
    failure = _failure(err.value, "expect_column_value_lengths_to_be_between", "text")
    assert failure.sample_ids == ["big1"] and failure.n_unexpected == 1
    assert "longer than 10000 characters (longest: 10000000)" in failure.detail
    assert len(str(err.value)) < 1000  # the text itself is never echoed into the message


def test_text_length_limit_is_inclusive() -> None:
    frame = _pool(3)
    frame.loc[0, "text"] = "a" * 50
    frame.loc[1, "text"] = "b" * 51
    with pytest.raises(DataContractError) as err:
        validate_pool(frame, label_set=None, max_text_length=50)
    assert _failure(err.value, "expect_column_value_lengths_to_be_between", "text").sample_ids == ["i1"]


def test_several_broken_rules_give_one_line_each() -> None:
    frame = _pool(8)
    frame.loc[3, "id"] = "i1"
    frame.loc[4, "text"] = None
    frame.loc[5, "label"] = "zz"
    with pytest.raises(DataContractError) as err:
        validate_pool(frame, label_set=LABELS, source="batch-7")
    lines = str(err.value).splitlines()
    assert len(lines) == len(err.value.failures) == 3
    assert all(line.startswith("pool contract (batch-7): ") for line in lines)
    assert {(f.expectation, f.column, tuple(f.sample_ids)) for f in err.value.failures} == {
        ("expect_column_values_to_be_unique", "id", ("i1",)),
        ("expect_column_values_to_not_be_null", "text", ("i4",)),
        ("expect_column_values_to_be_in_set", "label", ("i5",)),
    }


def test_missing_columns_and_empty_pool_are_contract_failures() -> None:
    with pytest.raises(DataContractError) as err:
        validate_pool(pd.DataFrame({"id": ["a"], "body": ["t"]}), label_set=None, source="p.csv")
    failure = _failure(err.value, "expect_column_to_exist", "text")
    assert "available columns: 'id', 'body'" in failure.detail and "p.csv" in str(err.value)
    with pytest.raises(DataContractError) as err:
        validate_pool(_pool(0), label_set=None)
    assert _failure(err.value, "expect_table_row_count_to_be_between", None).detail == "the pool is empty"


def test_non_string_ids_and_texts_are_reported() -> None:
    frame = _pool(4).astype({"id": object, "text": object})
    frame.at[1, "id"] = 17
    frame.at[2, "text"] = 3.5
    with pytest.raises(DataContractError) as err:
        validate_pool(frame, label_set=None)
    ids = _failure(err.value, "expect_column_values_to_be_of_type", "id")
    assert ids.sample_ids == ["17"] and "found int" in ids.detail
    texts = _failure(err.value, "expect_column_values_to_be_of_type", "text")
    assert texts.sample_ids == ["i2"] and "found float" in texts.detail


def test_sample_ids_are_capped_at_ten() -> None:
    frame = _pool(30)
    frame["label"] = "bad"
    with pytest.raises(DataContractError) as err:
        validate_pool(frame, label_set=LABELS)
    failure = _failure(err.value, "expect_column_values_to_be_in_set", "label")
    assert failure.n_unexpected == 30 and failure.sample_ids == [f"i{i}" for i in range(10)]
    assert "(+20 more)" in failure.detail


def test_reports_render_and_escape() -> None:
    frame = _pool()
    frame.loc[1, "id"] = "i0"
    with pytest.raises(DataContractError) as err:
        validate_pool(frame, label_set=LABELS, source="<script>x</script>.csv")
    summary = err.value.summary
    md = summary.to_markdown()
    assert "# Data contract 'pool' FAILED" in md
    assert "| expect_column_values_to_be_unique(id) | **FAIL** | 2 | i0 |" in md
    assert "| expect_column_values_to_not_be_null(text) | pass | 0 |" in md
    page = summary.to_html()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<tr") == len(summary.results) + 1
    assert "<b>FAIL</b>" in page
    as_dict = json.loads(json.dumps(summary.to_dict()))
    assert as_dict["success"] is False and as_dict["n_rows"] == 6
    unique = [r for r in as_dict["results"] if r["expectation"] == "expect_column_values_to_be_unique(id)"]
    assert unique == [{"expectation": "expect_column_values_to_be_unique(id)", "success": False,
                       "n_unexpected": 2, "sample_ids": ["i0"], "detail": unique[0]["detail"]}]


def test_ten_thousand_rows_validate_fast() -> None:
    frame = _pool(10_000)
    validate_pool(frame, label_set=LABELS)  # warm-up: GX import and context
    started = time.perf_counter()
    summary = validate_pool(frame, label_set=LABELS)
    elapsed = time.perf_counter() - started
    print(f"\npool contract, 10k rows: {elapsed:.3f} s")
    assert summary.success and elapsed < 2.0


def test_repeated_and_concurrent_runs_do_not_collide_or_accumulate() -> None:
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:
            for _ in range(3):
                validate_pool(_pool(20 + offset), label_set=LABELS)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    state = ex._gx()
    assert state["context"].suites.all() == []  # suites are never stored: built per run, validated on the batch
    n_assets = len(state["datasource"].assets)
    assert n_assets == len(state["batch_definitions"]), "one asset per contract, reused by every run"
    validate_pool(_pool(25), label_set=LABELS)
    assert len(state["datasource"].assets) == n_assets, "a further run adds nothing to the context"
    assert state["context"] is ex._gx()["context"]  # one context per process


# --------------------------------------------------------------------------- annotations


def _annotations(name: str) -> pd.DataFrame:
    return pd.read_csv(BAD / name, dtype=str)


def test_good_annotations_pass_including_skips_without_labels() -> None:
    frame = pd.DataFrame(
        {
            "backend_annotation_id": ["1", "2", "3"],
            "item_id": ["r1", "r1", "r2"],
            "annotator": ["alice", "bob", "alice"],
            "label": ["pos", "neg", None],
            "status": ["submitted", "submitted", "skipped"],
            "created_at": [datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 11), "2024-05-01T12:00:00+02:00"],
        }
    )
    summary = validate_annotations(
        frame, known_items={"r1", "r2"}, known_annotators=["alice", "bob"], label_set=LABELS, now=NOW
    )
    assert summary.success and summary.n_rows == 3


def test_annotations_for_unknown_items_and_annotators() -> None:
    name = "annotations_unknown_items_annotators.csv"
    with pytest.raises(DataContractError) as err:
        validate_annotations(
            _annotations(name), known_items=["r1", "r2", "r3", "r4"], known_annotators=["alice", "bob"],
            label_set=LABELS, source=name, now=NOW,
        )
    assert len(err.value.failures) == 2
    items = _failure(err.value, "expect_column_values_to_be_in_set", "item_id")
    assert items.sample_ids == ["103"] and "'ghost-item'" in items.detail
    annotators = _failure(err.value, "expect_column_values_to_be_in_set", "annotator")
    assert annotators.sample_ids == ["104"] and "'mallory'" in annotators.detail
    assert f"annotations contract ({name})" in str(err.value)


def test_annotator_check_is_skipped_without_known_annotators() -> None:
    frame = _annotations("annotations_unknown_items_annotators.csv")
    frame = frame[frame["item_id"] != "ghost-item"]
    summary = validate_annotations(frame, known_items=["r1", "r2", "r3", "r4"], known_annotators=None,
                                   label_set=LABELS, now=NOW)
    names = [r.expectation for r in summary.results]
    assert summary.success and "expect_column_values_to_not_be_null(annotator)" in names
    assert "expect_column_values_to_be_in_set(annotator)" not in names


def test_two_live_annotations_for_same_item_and_annotator() -> None:
    name = "annotations_two_live.csv"
    with pytest.raises(DataContractError) as err:
        validate_annotations(_annotations(name), known_items=["r1", "r2"], known_annotators=None,
                             label_set=LABELS, source=name, now=NOW)
    assert len(err.value.failures) == 1  # r2: one skip + one submit by alice is fine
    failure = _failure(err.value, "expect_compound_columns_to_be_unique", "item_id+annotator")
    assert failure.sample_ids == ["201", "202"] and failure.n_unexpected == 2
    assert "item_id=r1, annotator=alice" in failure.detail


def test_timestamps_in_future_before_2000_or_unparseable() -> None:
    name = "annotations_bad_timestamps.csv"
    with pytest.raises(DataContractError) as err:
        validate_annotations(_annotations(name), known_items=["r1", "r2", "r3", "r4"], known_annotators=None,
                             label_set=LABELS, source=name, now=NOW)
    assert _failure(err.value, "expect_column_values_to_not_be_null", "created_at").sample_ids == ["304"]
    between = _failure(err.value, "expect_column_values_to_be_between", "created_at")
    assert between.sample_ids == ["302", "303"]
    assert "2000-01-01" in between.detail and "2024-06-01T12:05:00Z" in between.detail


def test_future_slack_is_five_minutes() -> None:
    frame = pd.DataFrame({"item_id": ["r1", "r2"], "annotator": ["a", "b"], "label": ["pos", "neg"],
                          "status": ["submitted"] * 2,
                          "created_at": [pd.Timestamp(NOW) + pd.Timedelta(minutes=4),
                                         pd.Timestamp(NOW) + pd.Timedelta(minutes=6)]})
    with pytest.raises(DataContractError) as err:
        validate_annotations(frame, known_items=["r1", "r2"], known_annotators=None, label_set=LABELS, now=NOW)
    # no backend_annotation_id column → rows are named by item_id
    assert _failure(err.value, "expect_column_values_to_be_between", "created_at").sample_ids == ["r2"]


def test_annotation_status_and_missing_labels() -> None:
    frame = pd.DataFrame({"backend_annotation_id": ["1", "2", "3"], "item_id": ["r1", "r2", "r3"],
                          "annotator": ["a", "a", "a"], "label": [None, "pos", "meh"],
                          "status": ["submitted", "deleted", "submitted"]})
    with pytest.raises(DataContractError) as err:
        validate_annotations(frame, known_items=["r1", "r2", "r3"], known_annotators=None, label_set=LABELS)
    assert _failure(err.value, "expect_column_values_to_not_be_null", "label").sample_ids == ["1"]
    assert _failure(err.value, "expect_column_values_to_be_in_set", "status").sample_ids == ["2"]
    assert _failure(err.value, "expect_column_values_to_be_in_set", "label").sample_ids == ["3"]


def test_a_million_known_items_stay_fast() -> None:
    known = {f"item-{i}" for i in range(1_000_000)}
    frame = pd.DataFrame({"item_id": ["item-5", "nope"], "annotator": ["a", "b"], "label": ["pos", "neg"],
                          "status": ["submitted"] * 2})
    started = time.perf_counter()
    with pytest.raises(DataContractError) as err:
        validate_annotations(frame, known_items=known, known_annotators=None, label_set=LABELS)
    assert time.perf_counter() - started < 5.0  # a GX value_set of 1M took minutes
    assert _failure(err.value, "expect_column_values_to_be_in_set", "item_id").sample_ids == ["nope"]


# --------------------------------------------------------------------------- training set


def test_training_set_containing_test_ids() -> None:
    name = "training_contains_test_id.csv"
    frame = pd.read_csv(BAD / name, dtype=str)
    with pytest.raises(DataContractError) as err:
        validate_training_set(frame, forbidden_ids={"test-7", "test-9", "cal-2"}, source=name)
    assert len(err.value.failures) == 1
    failure = _failure(err.value, "expect_column_values_to_be_in_set", "id")
    assert failure.sample_ids == ["test-7", "cal-2"] and "test/calibration" in failure.detail
    assert f"training set contract ({name})" in str(err.value)


def test_training_set_item_with_two_labels() -> None:
    name = "training_conflicting_labels.csv"
    frame = pd.read_csv(BAD / name, dtype=str)
    with pytest.raises(DataContractError) as err:
        validate_training_set(frame, forbidden_ids=[], source=name)
    failure = _failure(err.value, "expect_column_values_to_be_between", "id")
    assert failure.sample_ids == ["r1"]  # r2 twice with the same label is not a conflict
    assert "r1: ['neg', 'pos']" in failure.detail


def test_training_set_class_minimum_and_label_set() -> None:
    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": ["pos", "pos", "neg", "odd"]})
    with pytest.raises(DataContractError) as err:
        validate_training_set(frame, forbidden_ids=[], min_per_class=2, label_set=["pos", "neg", "neutral"])
    small = _failure(err.value, "expect_column_values_to_be_between", "label")
    assert small.sample_ids == ["c", "d"] and "'neg' (1), 'odd' (1)" in small.detail
    assert _failure(err.value, "expect_column_values_to_be_in_set", "label").sample_ids == ["d"]
    absent = _failure(err.value, "expect_column_distinct_values_to_contain_set", "label")
    assert absent.n_unexpected == 1 and "'neutral'" in absent.detail


def test_good_training_set_passes() -> None:
    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": ["pos", "neg", "pos", "neg"]})
    summary = validate_training_set(frame, forbidden_ids=["t1"], min_per_class=2, label_set=LABELS)
    assert summary.success and summary.n_rows == 4


# --------------------------------------------------------------------------- label set


def test_label_set_is_normalised_and_order_kept() -> None:
    assert validate_label_set([" pos", "neg ", "cafe\u0301"]) == ["pos", "neg", "café"]


@pytest.mark.parametrize(
    "labels, expectation, fragment",
    [
        (["pos", "neg", "pos"], "expect_label_names_to_be_unique", "'pos' at position 3 duplicates 'pos' at position 1"),
        (["pos", "Neg", "neg"], "expect_label_names_to_be_unique", "'neg' at position 3 duplicates 'Neg' at position 2"),
        (["pos", "", "neg"], "expect_label_names_to_be_non_empty", "at position 2"),
        (["pos", " \t", "neg"], "expect_label_names_to_be_non_empty", "at position 2"),
        (["pos"], "expect_at_least_two_labels", "at least two classes"),
    ],
)
def test_bad_label_sets(labels, expectation, fragment) -> None:
    with pytest.raises(DataContractError) as err:
        validate_label_set(labels, source="campaign.yaml")
    failure = _failure(err.value, expectation, "label")
    assert fragment in failure.detail
    assert "label set contract (campaign.yaml)" in str(err.value)


@pytest.mark.parametrize("labels, fragment", [("pos,neg", "expected a list"), (["pos", None], "position 2"),
                                              (["pos", 3], "got int")])
def test_label_set_of_wrong_type_is_input_error(labels, fragment) -> None:
    with pytest.raises(InputError, match=fragment):
        validate_label_set(labels)


def test_contracts_validate_the_label_set_they_are_given() -> None:
    with pytest.raises(DataContractError, match="expect_label_names_to_be_unique"):
        validate_pool(_pool(), label_set=["pos", "pos"])
