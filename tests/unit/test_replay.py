"""The replay backend (integrations/replay.py): real recorded annotators answer pushed items."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labelloop.integrations.backend import AnnotationBackend, BackendError, TaskRequest, supports_more_answers
from labelloop.integrations.replay import ReplayBackend, load_replay, read_answers
from labelloop.integrations.simulated import SimulatedBackend
from labelloop.tasks import agreement
from labelloop.tasks import trust as T

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
RTE = SHARED / "rte_mturk_annotations.csv"
needs_rte = pytest.mark.skipif(not RTE.is_file(), reason=f"shared dataset {RTE} not present (see MANIFEST.md)")


def _small(tmp_path: Path) -> Path:
    rows = [("x1", "text one", "w1", "pos", "pos"), ("x1", "text one", "w2", "neg", "pos"),
            ("x1", "text one", "w3", "pos", "pos"), ("x2", "text two", "w1", "neg", "neg"),
            ("x2", "text two", "w3", "neg", "neg")]
    p = tmp_path / "ann.csv"
    pd.DataFrame(rows, columns=["item_id", "text", "annotator_id", "label", "gold"]).to_csv(p, index=False)
    return p


def test_replays_exactly_the_recorded_answers(tmp_path: Path) -> None:
    data = load_replay(_small(tmp_path))
    assert data.items.to_dict("records") == [{"id": "x1", "text": "text one", "label": "pos"},
                                             {"id": "x2", "text": "text two", "label": "neg"}]
    b = ReplayBackend(tmp_path / "state.json", data.annotations)
    assert isinstance(b, AnnotationBackend) and b.annotator_names == ["w1", "w2", "w3"]
    ids = b.push([TaskRequest("x1", "text one")])
    assert ids == {"x1": "1"} and b.push([TaskRequest("x1", "text one"), TaskRequest("x2", "t")]) == {"x1": "1", "x2": "2"}
    pulled = b.pull()
    got = sorted((a.item_id, a.annotator, a.label) for a in pulled)
    assert got == [("x1", "w1", "pos"), ("x1", "w2", "neg"), ("x1", "w3", "pos"), ("x2", "w1", "neg"), ("x2", "w3", "neg")]
    assert [a.backend_annotation_id for a in pulled] == [a.backend_annotation_id for a in b.pull()], "stable ids"
    # The state outlives the object (a re-run process sees the same tasks).
    again = ReplayBackend(tmp_path / "state.json", data.annotations)
    assert again.push([TaskRequest("x2", "t")]) == {"x2": "2"}
    again.close_tasks(["1"])
    assert {a.item_id for a in again.pull()} == {"x2"}


def test_max_per_item_keeps_a_stable_subset(tmp_path: Path) -> None:
    data = load_replay(_small(tmp_path))
    b = ReplayBackend(tmp_path / "s.json", data.annotations, max_per_item=2, seed=3)
    first = b.answers("x1")
    assert len(first) == 2 and first == ReplayBackend(tmp_path / "t.json", data.annotations, max_per_item=2,
                                                       seed=3).answers("x1")
    assert len(b.answers("x2")) == 2


def test_items_without_recorded_answers_are_accepted_and_reported(tmp_path: Path) -> None:
    data = load_replay(_small(tmp_path))
    b = ReplayBackend(tmp_path / "s.json", data.annotations, max_per_item=3)
    ids = b.push([TaskRequest("x1", "t"), TaskRequest("nope", "t"), TaskRequest("x2", "t")])
    assert set(ids) == {"x1", "nope", "x2"}, "push accepts an item nobody answered"
    assert {a.item_id for a in b.pull()} == {"x1", "x2"}
    assert b.unanswerable() == ["nope"] and b.unanswerable(["x1", "nope"]) == ["nope"]
    assert b.unanswerable(["x1"]) == []
    assert b.answer_targets() == {"x1": 3, "nope": 0, "x2": 2}, "capped by the recorded answers"


def test_unknown_items_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="not found"):
        load_replay(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("item_id,label\nx,y\n")
    with pytest.raises(BackendError, match="annotator_id"):
        load_replay(tmp_path / "bad.csv")


@needs_rte
def test_rte_replay_through_the_backend_and_the_trust_policy(tmp_path: Path) -> None:
    """800 RTE items x 10 MTurk workers: pushed, pulled back, decided by the trust policy.
    Dawid-Skene beats majority vote and a single worker (the AGREEMENT.md figures)."""
    data = load_replay(RTE)
    labels = ["entailment", "no_entailment"]
    b = ReplayBackend(tmp_path / "s.json", data.annotations)
    b.push([TaskRequest(i, t) for i, t in zip(data.items["id"], data.items["text"])])
    pulled = pd.DataFrame([a.__dict__ for a in b.pull()])
    assert len(pulled) == 8000 and pulled["annotator"].nunique() == 164
    gold = data.items.set_index("id")["label"]
    pol = dict(min_consensus_answers=10_000, min_confidence=0.0, alpha_gate=-1.0, need=10)
    ds = T.decide(pulled, labels, T.TrustPolicy(consensus="dawid_skene", **pol))
    mv = agreement.majority_vote(pulled, labels)
    assert ds.method == "dawid_skene"
    acc_ds = (ds.trusted["label"] == gold[ds.trusted.index]).mean()
    acc_single = (pulled["label"].to_numpy() == gold[pulled["item_id"]].to_numpy()).mean()
    acc_mv = (mv["label"] == gold[mv.index]).mean()
    assert acc_ds > acc_mv > acc_single
    assert ds.metrics["krippendorff_alpha"] == pytest.approx(0.241, abs=0.001)


# --------------------------------------------------------------------------- read_answers (the config's file)
def _answers_csv(tmp_path: Path, rows: list[tuple], header: str = "item_id,annotator_id,label") -> Path:
    p = tmp_path / "answers.csv"
    p.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return p


def test_read_answers_reads_csv_and_parquet_with_custom_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame({"doc": ["a", "a", "b", "b", "a"], "who": ["w1", "w2", "w1", "w2", "w1"],
                          "answer": ["pos", "neg", " neg ", "", "neg"]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    for name in ("a.csv", "a.parquet"):
        got = read_answers(tmp_path / name, item_column="doc", annotator_column="who", label_column="answer",
                           labels=["pos", "neg"])
        # blank label = skipped answer (dropped); a repeated (item, worker) keeps the last answer
        assert sorted(map(tuple, got.to_numpy().tolist())) == [("a", "w1", "neg"), ("a", "w2", "neg"),
                                                                 ("b", "w1", "neg")], name


@pytest.mark.parametrize(("rows", "header", "kw", "match"), [
    ([("x", "w", "pos")], "item_id,worker,label", {}, r"answers.csv: missing column\(s\) 'annotator_id'"),
    ([("x", "w", "pos"), ("y", "w", "maybe")], "item_id,annotator_id,label", {},
     r"answers.csv, row 2: column 'label' has label 'maybe', not in the label set"),
    ([("x", "w", "pos"), (" ", "w", "pos")], "item_id,annotator_id,label", {},
     r"answers.csv, row 2: column 'item_id' is blank"),
    ([("x", "w", "")], "item_id,annotator_id,label", {}, "has no answers"),
])
def test_read_answers_bad_files_name_file_and_row(tmp_path: Path, rows: list, header: str, kw: dict,
                                                  match: str) -> None:
    p = _answers_csv(tmp_path, rows, header)
    with pytest.raises(BackendError, match=match):
        read_answers(p, labels=["pos", "neg"], **kw)
    with pytest.raises(BackendError, match="not found"):
        read_answers(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(BackendError, match="unknown file type"):
        read_answers(tmp_path / "x.xlsx")


# --------------------------------------------------------------------------- request_more (adaptive redundancy)
def _ten_workers(tmp_path: Path) -> pd.DataFrame:
    return pd.DataFrame([(f"i{i}", f"w{w}", "pos" if (i + w) % 3 else "neg") for i in range(20) for w in range(5)],
                        columns=["item_id", "annotator", "label"])


def test_replay_request_more_adds_the_next_recorded_worker(tmp_path: Path) -> None:
    ann = _ten_workers(tmp_path)
    b = ReplayBackend(tmp_path / "s.json", ann, max_per_item=3, seed=1)
    b.push([TaskRequest(f"i{i}", "t") for i in range(20)] + [TaskRequest("none", "t")])
    before = {(a.item_id, a.annotator): (a.label, a.backend_annotation_id, a.created_at) for a in b.pull()}
    assert len(before) == 60
    assert b.request_more(["i0", "i1", "none", "never-pushed"], max_overlap=5) == {"i0": 4, "i1": 4, "none": 0}
    # a new process sees the raised targets (stored in the JSON state)
    again = ReplayBackend(tmp_path / "s.json", ann, max_per_item=3, seed=1)
    after = {(a.item_id, a.annotator): (a.label, a.backend_annotation_id, a.created_at) for a in again.pull()}
    assert len(after) == 62 and all(after[k] == v for k, v in before.items()), "earlier answers unchanged"
    new = set(after) - set(before)
    assert {i for i, _ in new} == {"i0", "i1"}
    assert all(after[k][2] > max(v[2] for kk, v in before.items() if kk[0] == k[0]) for k in new), \
        "the extra answer arrives after the first ones"
    assert again.answers("i0", 4)[:3] == again.answers("i0")
    assert again.request_more(["i0"], 5) == {"i0": 5}
    assert again.request_more(["i0"], 5) == {"i0": 5}, "never beyond max_overlap"
    assert again.request_more(["i1"], 10) == {"i1": 5}
    assert again.request_more(["i1"], 10) == {"i1": 5}, "no further recorded worker: unchanged"
    again.close_tasks([again.push([TaskRequest("i2", "t")])["i2"]])
    assert again.request_more(["i2"], 5) == {"i2": 3}, "a closed task gets nothing more"


def test_simulated_request_more_keeps_the_first_annotators(tmp_path: Path) -> None:
    truth = {f"i{i}": ("pos" if i % 2 else "neg") for i in range(30)}
    team = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6), ("e", 0.95)]

    def backend() -> SimulatedBackend:
        return SimulatedBackend(tmp_path / "sim.json", true_labels=truth, annotators=team, labels=["pos", "neg"],
                                overlap=3, seed=4)

    b = backend()
    assert b.annotator_names == ["a", "b", "c", "d", "e"]
    b.push([TaskRequest(i, "t") for i in truth])
    before = {(a.item_id, a.annotator): a.label for a in b.pull()}
    assert len(before) == 90
    targets = b.request_more(list(truth)[:10], max_overlap=4)
    assert targets == {i: 4 for i in list(truth)[:10]}
    after = {(a.item_id, a.annotator): a.label for a in backend().pull()}
    assert len(after) == 100 and all(after[k] == v for k, v in before.items())
    assert backend().request_more(["i0"], 4) == {"i0": 4}
    assert backend().request_more(["i0"], 9) == {"i0": 5} and backend().request_more(["i0"], 9) == {"i0": 5}, \
        "five annotators: nothing more can come"
    with pytest.raises(BackendError, match="cannot answer"):
        b.push([TaskRequest("unknown", "t")])

    assert supports_more_answers(b) and isinstance(b, AnnotationBackend)


# --------------------------------------------------------------------------- [annotation.replay] config
def _replay_campaign(tmp_path: Path, answers: str = "answers.csv", extra: str = "") -> Path:
    pool = pd.DataFrame({"id": [f"i{i}" for i in range(40)], "text": [f"text {i}" for i in range(40)],
                         "label": ["pos" if i % 2 else "neg" for i in range(40)]})
    (tmp_path / "data").mkdir(exist_ok=True)
    pool.to_csv(tmp_path / "data" / "pool.csv", index=False)
    cfg = tmp_path / "conf" / "campaign.toml"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(f"""
name = "r"
workdir = "../work"
[data]
path = "../data/pool.csv"
[labels]
names = ["pos", "neg"]
[annotation]
backend = "replay"
overlap = 2
[annotation.replay]
path = "../data/{answers}"
{extra}
""", encoding="utf-8")
    return cfg


def test_replay_config_parses_and_builds_the_backend(tmp_path: Path) -> None:
    from labelloop.flows.config import load_config
    from labelloop.flows.runtime import make_backend, open_campaign

    cfg_path = _replay_campaign(tmp_path, extra='annotator_column = "worker"\nseed = 7')
    pd.DataFrame({"item_id": ["i1", "i1", "i1", "i2"], "worker": ["w1", "w2", "w3", "w1"],
                  "label": ["pos", "pos", "neg", "neg"]}).to_csv(tmp_path / "data" / "answers.csv", index=False)
    cfg = load_config(cfg_path)
    r = cfg.annotation.replay
    assert (r.item_column, r.annotator_column, r.label_column, r.seed) == ("item_id", "worker", "label", 7)
    assert r.file(cfg.base_dir) == (tmp_path / "data" / "answers.csv").resolve(), "relative to the config file"
    c = open_campaign(cfg)
    b = make_backend(c)
    assert isinstance(b, ReplayBackend) and b.name == "replay" and b.max_per_item == 2 and b.seed == 7
    assert b.annotator_names == ["w1", "w2", "w3"]
    b.push([TaskRequest("i1", "t"), TaskRequest("i2", "t"), TaskRequest("i3", "t")])
    assert len(b.pull()) == 3 and b.unanswerable() == ["i3"]
    assert (tmp_path / "work" / "replay_backend.json").is_file()


def test_replay_config_errors(tmp_path: Path) -> None:
    from labelloop.flows.config import ConfigError, parse_config
    from labelloop.flows.runtime import open_campaign

    base = {"name": "r", "data": {"path": "p.csv"}, "labels": {"names": ["pos", "neg"]}}
    with pytest.raises(ConfigError, match=r"needs \[annotation.replay\] path"):
        parse_config({**base, "annotation": {"backend": "replay"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="annotation.replay.label_col: unknown key"):
        parse_config({**base, "annotation": {"backend": "replay", "replay": {"path": "a.csv", "label_col": "x"}}},
                     base_dir=tmp_path)
    # A bad replay file stops the campaign before anything is written (no workdir, no ledger).
    cfg_path = _replay_campaign(tmp_path)
    with pytest.raises(BackendError, match="replay file not found: .*answers.csv"):
        open_campaign(cfg_path)
    (tmp_path / "data" / "answers.csv").write_text("item_id,annotator_id,label\ni1,w1,pos\ni2,w1,unsure\n")
    with pytest.raises(BackendError, match=r"answers.csv, row 2: column 'label' has label 'unsure'"):
        open_campaign(cfg_path)
    assert not (tmp_path / "work").exists()
