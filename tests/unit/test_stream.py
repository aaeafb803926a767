"""Stream mode's pure decisions (tasks/stream.py): routing, audits, the daily budget, the precision gate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from labelloop.tasks import stream as S
from labelloop.tasks.calibrate import fit_temperature


def test_sure_items_are_auto_labelled_and_the_rest_go_to_people_within_the_budget():
    ids = [f"i{k}" for k in range(6)]
    conf = [0.95, 0.5, 0.91, 0.2, 0.4, 0.99]
    r = S.route(ids, ["a"] * 6, conf, threshold=0.9, audit_share=0.0, budget_left=2)
    assert r.ids(S.AUTO) == ["i0", "i2", "i5"]
    assert r.ids(S.ROUTED) == ["i1", "i3"], "arrival order within the budget"
    assert r.ids(S.HELD) == ["i4"], "beyond the day's budget: held for the next day"
    assert all(d.label == "a" for d in r.decisions if d.route == S.AUTO)
    assert all(d.label is None for d in r.decisions if d.route != S.AUTO), "people label routed items"


def test_audits_are_a_stable_share_of_auto_labels_and_come_first_in_the_budget():
    ids = [f"x{k}" for k in range(2000)]
    picked = [i for i in ids if S.is_audit(i, 0.1, seed=3)]
    assert 150 <= len(picked) <= 250, len(picked)  # ~10 %
    assert picked == [i for i in ids if S.is_audit(i, 0.1, seed=3)], "the same items on every run"
    assert picked != [i for i in ids if S.is_audit(i, 0.1, seed=4)], "the seed changes the draw"
    assert not any(S.is_audit(i, 0.0) for i in ids) and all(S.is_audit(i, 1.0) for i in ids[:50])

    r = S.route(ids[:40], ["a"] * 40, [0.1] * 20 + [0.95] * 20, threshold=0.9, audit_share=1.0, budget_left=5)
    assert r.counts() == {"auto": 15, "audit": 5, "routed": 0, "held": 20}, \
        "every sure item is an audit candidate; audits take the budget before uncertain items"
    assert all(d.label == "a" for d in r.decisions if d.route == S.AUDIT), "an audit keeps its automatic label"


def test_no_threshold_means_no_automatic_labels():
    r = S.route(["a", "b"], ["x", "y"], [0.99, 0.999], threshold=None, audit_share=0.5, budget_left=10)
    assert r.counts()["routed"] == 2 and r.counts()["auto"] == 0
    with pytest.raises(ValueError):
        S.route(["a"], ["x", "y"], [0.9], threshold=0.5, audit_share=0.0, budget_left=1)


def test_budget_left_and_human_label():
    assert S.budget_left(100, 30) == 70 and S.budget_left(10, 12) == 0
    assert S.human_label(["a", "a", "b"], 2) == "a"
    assert S.human_label(["a", "b"], 2) is None, "a tie is no label"
    assert S.human_label(["a"], 2) is None, "too few answers"
    assert S.human_label(["b", None, "b"], 2) == "b"


def test_calibrated_confidence_is_temperature_scaled_on_the_calibration_slice():
    rng = np.random.default_rng(0)
    # an over-confident model: says 0.98 but is right 70 % of the time
    n = 400
    y = rng.integers(0, 2, n)
    right = rng.random(n) < 0.7
    pred = np.where(right, y, 1 - y)
    p_cal = np.where(pred[:, None] == np.arange(2)[None, :], 0.98, 0.02)
    conf, t = S.calibrated_confidence(np.array([[0.98, 0.02]]), p_cal, y)
    assert t == pytest.approx(fit_temperature(p_cal, y, is_proba=True))
    assert t > 1 and 0.6 < conf[0] < 0.8, (t, conf)  # pulled down to about the 70 % it earns
    raw, none = S.calibrated_confidence(np.array([[0.98, 0.02]]))
    assert none is None and raw[0] == pytest.approx(0.98)


def test_wilson_low_matches_scipy():
    assert S.wilson_low(0, 0) is None
    assert S.wilson_low(18, 20) == pytest.approx(binomtest(18, 20).proportion_ci(method="wilson").low)
    assert S.wilson_low(18, 20) < 0.9 < 18 / 20 + 1e-9


def test_the_gate_keeps_raises_or_stops_the_threshold():
    good = [(0.95, True)] * 60 + [(0.92, True)] * 2
    g = S.gate_threshold(good, threshold=0.9, min_precision=0.9, min_audits=20)
    assert g.threshold == 0.9 and g.precision.n == 62 and g.precision.precision == 1.0

    few = [(0.95, False)] * 5
    g = S.gate_threshold(few, threshold=0.9, min_precision=0.9, min_audits=20)
    assert g.threshold == 0.9 and "fewer than 20" in g.reason, "no evidence yet: kept"

    # wrong between 0.90 and 0.95, right above: the threshold rises to where precision holds
    mixed = [(0.91, False)] * 30 + [(0.93, False)] * 10 + [(0.96, True)] * 50 + [(0.99, True)] * 50
    g = S.gate_threshold(mixed, threshold=0.9, min_precision=0.9, min_audits=20)
    assert g.threshold == 0.96, g.reason
    assert g.precision.n == 100 and g.precision.low >= 0.9
    assert "raised to 0.960" in g.reason

    bad = [(0.9 + k / 1000, k % 3 != 0) for k in range(90)]  # about 67 % right at every confidence
    g = S.gate_threshold(bad, threshold=0.9, min_precision=0.9, min_audits=20)
    assert g.threshold is None and "stopped" in g.reason
    assert g.precision.precision == pytest.approx(60 / 90)


def test_audit_outcomes_compare_only_answered_audits():
    audited = {"a": ("pos", 0.95), "b": ("neg", 0.97), "c": ("pos", 0.99)}
    assert sorted(S.audit_outcomes(audited, {"a": "pos", "b": "pos"})) == [(0.95, True), (0.97, False)]


def test_prefect_yaml_gets_the_stream_interval_as_the_nearest_cron():
    from labelloop.flows.deploy import stream_cron

    assert [stream_cron(s) for s in (5, 120, 300, 3600, 7200, 90000)] == [
        "*/1 * * * *", "*/2 * * * *", "*/5 * * * *", "0 */1 * * *", "0 */2 * * *", "0 0 * * *"]


def test_automatic_labels_train_only_when_configured(tmp_path):
    """``[stream] train_on_auto``: off, an arm's training set is people's labels only; on, the automatic labels
    join it (not its spend), and a person's label on the same item wins."""
    import pandas as pd

    from labelloop.flows.config import parse_config
    from labelloop.flows.round import _labelled_set
    from labelloop.flows.runtime import Campaign
    from labelloop.integrations.ledger import Ledger

    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", "t")
    led.add_items(pd.DataFrame({"id": ["p1", "p2"], "text": ["a", "b"], "label": None, "split": "pool"}))
    led.consume_stream_file(pd.DataFrame({"id": ["s1", "s2", "p2"], "text": ["c", "d", "b"], "label": None}),
                            sha256="0" * 64, path="f.csv")
    led.add_queries("active", 0, [{"item_id": i, "strategy": "seed", "reason": "seed"} for i in ("p1", "p2")])
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    led.record_stream_decisions([
        {"item_id": i, "route": r, "label": lbl, "source": "auto" if lbl else None, "confidence": 0.95,
         "model_version": "v1", "threshold": 0.9, "day": "2026-01-01", "decided_at": now}
        for i, r, lbl in (("s1", "auto", "x"), ("s2", "routed", None), ("p2", "audit", "x"))])
    consensus = pd.DataFrame({"label": ["y", "y"]}, index=["p1", "p2"])

    def labelled(train_on_auto: bool) -> tuple[dict, int]:
        cfg = parse_config({"name": "t", "data": {"path": "x.csv"}, "labels": {"names": ["x", "y"]},
                            "stream": {"train_on_auto": train_on_auto}}, base_dir=tmp_path)
        lab, spent = _labelled_set(Campaign(cfg=cfg, ledger=led), "active", consensus)
        return dict(zip(lab["item_id"], lab["label"])), spent

    assert labelled(False) == ({"p1": "y", "p2": "y"}, 2)
    assert labelled(True) == ({"p1": "y", "p2": "y", "s1": "x"}, 2), "people's p2 wins; s2 has no auto label"
    assert set(led.items_frame(splits=["stream"])["item_id"]) == {"s1", "s2"}, "a known id stays in its split"


def test_stream_config_is_validated_and_served_every_interval_when_it_has_a_folder(tmp_path):
    from labelloop.flows.config import ConfigError, parse_config
    from labelloop.flows.deploy import WarmServer, build_deployments, describe

    base = {"name": "t", "data": {"path": "x.csv"}, "labels": {"names": ["x", "y"]}}
    for bad, key in (({"threshold": 1.5}, "stream.threshold"), ({"audit_share": -0.1}, "stream.audit_share"),
                     ({"daily_budget": -1}, "stream.daily_budget"), ({"min_precision": 0}, "stream.min_precision"),
                     ({"train_on_auto": "maybe"}, "stream.train_on_auto"), ({"treshold": 0.9}, "stream.treshold")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config({**base, "stream": bad}, base_dir=tmp_path)
    cfg = parse_config({**base, "stream": {"arrivals": "in", "interval_seconds": 60}}, base_dir=tmp_path)
    assert cfg.stream_arrivals_path == (tmp_path / "in").resolve() and cfg.stream.train_on_auto is False
    (tmp_path / "c.toml").write_text("")
    deps = {d.flow_name: d for d in build_deployments(tmp_path / "c.toml", cfg)}
    stream = deps["labelloop-stream"]
    assert stream.name == "t" and [s.schedule.interval.total_seconds() for s in stream.schedules] == [60.0]
    assert "labelloop-stream/t" in describe(cfg) and "every 60s" in describe(cfg)
    assert "labelloop-stream" in WarmServer([])._by_name, "a served stream run runs warm like the others"
    no_folder = parse_config(base, base_dir=tmp_path)
    assert not {d.flow_name: d for d in build_deployments(tmp_path / "c.toml", no_folder)}["labelloop-stream"].schedules


def test_files_left_alone_in_the_arrivals_folder_are_named(tmp_path):
    from labelloop.flows.stream import arrival_files, describe, other_files

    for name in ("a.csv", "b.jsonl", "notes.txt", "sheet.xlsx", ".c.csv.tmp"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    assert [p.name for p in arrival_files(tmp_path)] == ["a.csv", "b.jsonl"]
    assert other_files(tmp_path) == ["notes.txt", "sheet.xlsx"]  # the hidden file being written is not named
    result = {"campaign": "c", "ingested": {"added": 0, "files": 0}, "decided": 0, "auto": 0, "audit": 0,
              "routed": 0, "held": 0, "threshold": None, "audit_precision": None, "gate": "off",
              "other_files": other_files(tmp_path)}
    assert "left alone: 2 file(s) that are not CSV, Parquet or JSON Lines (notes.txt, sheet.xlsx)" in describe(result)
