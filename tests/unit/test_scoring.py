"""Unit tests for flows.scoring: partitioned scoring and top-k merge selection.

The partitions run in-process here (``_run_partitions`` is replaced by a plain
loop over the task functions), so these tests check the partition / merge
logic without a Prefect API; tests/integration/test_scale_out.py runs the real
thread and Dask task runners inside a round.
"""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.flows import scoring
from labelloop.flows.scoring import ScaleSettings, score_pool, select_from_pool, uniform_draws
from labelloop.tasks import query
from labelloop.tasks.demo_data import CLASSES, generate_demo_corpus
from labelloop.tasks.train import fit_featurizer, predict_proba_aligned, train_model


REAL_RUN_PARTITIONS = scoring._run_partitions


@pytest.fixture(autouse=True)
def inline_partitions(monkeypatch):
    """Run every partition task's function in this process, in partition order; count the calls."""
    calls = []

    def run(fn, parameters, settings):
        calls.append(len(parameters))
        return [fn.fn(**p) for p in parameters]

    monkeypatch.setattr(scoring, "_run_partitions", run)
    return calls


@pytest.fixture(scope="module")
def setup():
    df = generate_demo_corpus(n=1500, seed=3)
    texts = df["text"].tolist()
    vec = fit_featurizer(texts)
    lab = df.iloc[:120]
    model = train_model(vec, lab["text"].tolist(), lab["label"].tolist())
    pool = texts[120:]
    return model, vec, pool, list(CLASSES), lab


def _scale(size: int) -> ScaleSettings:
    return ScaleSettings(partition_size=size)


def test_partitions_cover_the_pool_in_order():
    assert scoring._partitions(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert scoring._partitions(3, 10) == [(0, 3)]
    assert scoring._partitions(0, 10) == []


def test_partitioned_scoring_equals_unpartitioned_predict_proba(setup, inline_partitions):
    model, vec, pool, classes, _ = setup
    X_ref = vec.transform(pool)
    p_ref = predict_proba_aligned(model, pool, classes)
    for size in (137, 500, len(pool)):
        X, p = score_pool(model, vec, pool, classes, scale=_scale(size))
        assert X.shape == X_ref.shape
        assert (X != X_ref).nnz == 0
        np.testing.assert_array_equal(p, p_ref)
    assert inline_partitions == [len(scoring._partitions(len(pool), 137)), 3]  # one piece: no task runner


def test_uniform_draws_depend_on_seed_and_row_only():
    rows = np.arange(10_000)
    d = uniform_draws(7, rows)
    assert d.min() >= 0.0 and d.max() < 1.0
    assert abs(d.mean() - 0.5) < 0.02
    np.testing.assert_array_equal(uniform_draws(7, rows[5000:]), d[5000:])
    assert not np.array_equal(uniform_draws(8, rows), d)


@pytest.mark.parametrize("strategy", ["least-confidence", "margin", "entropy", "cluster-margin"])
def test_topk_merge_equals_select_on_the_full_pool(setup, strategy):
    """No random share: the strategy share over the merged short list is select_batch on the whole pool."""
    model, vec, pool, classes, _ = setup
    seed, batch = 11, 6  # short list: top 60 by score (+ 50 lowest draws) of every 150-text partition
    X, p = score_pool(model, vec, pool, classes)
    full = query.select_batch(p, batch, strategy, np.random.default_rng([seed, 7]), random_share=0.0, X_pool=X)
    merged = select_from_pool(model, vec, pool, classes, batch, strategy, seed, random_share=0.0, scale=_scale(150))
    assert [(m.index, m.reason) for m in merged] == [(f.index, f.reason) for f in full]
    np.testing.assert_allclose([m.score for m in merged], [f.score for f in full])


@pytest.mark.parametrize("strategy,kwargs", [
    ("margin", {}),
    ("entropy", {"class_quota": 0.5}),
    ("cluster-margin", {"random_share": 0.3}),
    ("random", {}),
    ("coreset", {}),
    ("diversity-random", {}),
    ("density", {}),
    ("qbc", {}),
])
def test_same_selection_regardless_of_partition_size(setup, strategy, kwargs):
    model, vec, pool, classes, lab = setup
    if strategy == "qbc":
        kwargs = {**kwargs, "X_labelled": vec.transform(lab["text"].tolist()), "y_labelled": lab["label"].tolist()}
    picks = [select_from_pool(model, vec, pool, classes, 10, strategy, 5, scale=_scale(size), **kwargs)
             for size in (230, 600, len(pool))]
    as_tuples = [[(p.index, p.reason) for p in ps] for ps in picks]
    assert as_tuples[0] == as_tuples[1] == as_tuples[2]
    idx = [p.index for p in picks[0]]
    assert len(idx) == 10 and len(set(idx)) == 10 and all(0 <= i < len(pool) for i in idx)


def test_short_list_is_bounded_by_k_not_by_the_pool(setup):
    model, vec, pool, classes, _ = setup
    c = scoring.shortlist(model, vec, pool, classes, strategy="margin", seed=0, k_score=40, k_random=10,
                          scale=_scale(200))
    assert 40 <= len(c.rows) <= 50 and c.X.shape[0] == len(c.rows) and c.proba.shape == (len(c.rows), len(classes))
    assert np.all(np.diff(c.rows) > 0)
    scores = query.margin(predict_proba_aligned(model, pool, classes))
    top = np.argsort(-scores, kind="stable")[:40]
    assert set(top.tolist()) <= set(c.rows.tolist())


def test_random_share_is_the_lowest_draws_and_batch_policy_holds(setup):
    model, vec, pool, classes, _ = setup
    picks = select_from_pool(model, vec, pool, classes, 30, "margin", 9, random_share=0.2,
                             near_duplicate_threshold=None, scale=_scale(200))
    rnd = [p.index for p in picks if p.reason == "random"]
    assert len(rnd) == 6
    lowest = np.argsort(uniform_draws(9, np.arange(len(pool))), kind="stable")[:6]
    assert sorted(rnd) == sorted(lowest.tolist())
    assert sum(p.reason == "strategy" for p in picks) == 24


def test_near_duplicates_never_both_selected(setup):
    model, vec, pool, classes, _ = setup
    dup_pool = pool[:300] + pool[:300]  # every text twice
    picks = select_from_pool(model, vec, dup_pool, classes, 40, "margin", 1, random_share=0.25, scale=_scale(128))
    texts = [dup_pool[p.index] for p in picks]
    assert len(texts) == len(set(texts)) == 40


def test_scale_settings_from_config_and_unknown_runner():
    from labelloop.flows.config import ScaleConfig

    s = ScaleSettings.from_config(ScaleConfig(partition_size=1000, task_runner="dask", dask_workers=3))
    assert (s.partition_size, s.task_runner, s.dask_address, s.dask_workers) == (1000, "dask", None, 3)
    assert ScaleSettings.from_config(None) == ScaleSettings()
    with pytest.raises(ValueError, match="unknown task runner"):
        with scoring.task_runner(ScaleSettings(task_runner="ray")):
            pass


def test_run_partitions_keeps_two_per_worker_in_flight_and_returns_them_in_order(monkeypatch):
    """What bounds a Dask cluster's memory: few partitions submitted at once, each released when its result is in."""
    from contextlib import contextmanager

    log = {"live": 0, "max_live": 0}

    class Future:
        def __init__(self, value):
            self.value = value
            log["live"] += 1
            log["max_live"] = max(log["max_live"], log["live"])

        def result(self):
            log["live"] -= 1
            return self.value

    class Runner:
        def submit(self, fn, parameters):  # unwraps Prefect's annotations, as a real runner's task engine does
            return Future(fn(**{k: v.unwrap() for k, v in parameters.items()}))

    @contextmanager
    def fake_runner(settings):
        yield Runner()

    monkeypatch.setattr(scoring, "task_runner", fake_runner)
    out = REAL_RUN_PARTITIONS(lambda x: x * x, [{"x": i} for i in range(25)], ScaleSettings(max_workers=3))
    assert out == [i * i for i in range(25)]
    assert log["max_live"] == 6 and log["live"] == 0


class _DenseFeatures:
    """The same TF-IDF features as a dense array, as an embedding featuriser returns them."""

    def __init__(self, vec):
        self.vec = vec

    def transform(self, texts):
        return self.vec.transform(texts).toarray()


def test_bounded_selection_takes_dense_features_and_picks_the_same(setup):
    """The MiniLM featuriser returns dense arrays: the bounded path (short list, near-duplicate rule)
    must accept them and choose exactly what it chooses on the same features held sparse."""
    model, vec, pool, classes, _ = setup
    dup_pool = pool[:300] + pool[:300]  # every text twice: the near-duplicate rule is exercised
    sparse_picks = select_from_pool(model, vec, dup_pool, classes, 40, "margin", 1, random_share=0.25,
                                    scale=_scale(128))
    dense_picks = select_from_pool(model, _DenseFeatures(vec), dup_pool, classes, 40, "margin", 1,
                                   random_share=0.25, scale=_scale(128))
    assert [p.index for p in dense_picks] == [p.index for p in sparse_picks]
    texts = [dup_pool[p.index] for p in dense_picks]
    assert len(texts) == len(set(texts)) == 40


@scoring.task(name="echo-partition", cache_policy=scoring.NO_CACHE, persist_result=False)
def _echo_partition(texts, start):
    return type(texts).__name__, start, len(texts), texts[0]


def test_partition_texts_reach_the_task_as_a_plain_list_without_prefect_walking_them(prefect_api, monkeypatch):
    """Prefect walks every element of a collection parameter when it creates and when it runs a task run
    (looking for futures): ~1.7 s each per 200,000 texts, most of a 1M-text round's overhead. The partitions
    go in as ``opaque`` parameters: a real thread-pool runner must hand the task the plain list while
    Prefect's collection visitor never descends into it."""
    import prefect.utilities.collections as collections
    from prefect import flow

    real, nested = collections.visit_collection, []

    def counting(expr, *args, **kwargs):  # the visitor recurses through this module-level name
        nested.append(type(expr).__name__)
        return real(expr, *args, **kwargs)

    texts = [f"text {i}" for i in range(9_000)]

    @flow(name="partition-parameters", persist_result=False)
    def a_round() -> list:  # as in a round: the partitions are task runs of a flow run (their logs go with it)
        monkeypatch.setattr(collections, "visit_collection", counting)
        return REAL_RUN_PARTITIONS(_echo_partition, [{"texts": texts[a:a + 3_000], "start": a}
                                                     for a in (0, 3_000, 6_000)], ScaleSettings(max_workers=2))

    out = a_round()
    assert out == [("list", 0, 3_000, "text 0"), ("list", 3_000, 3_000, "text 3000"),
                   ("list", 6_000, 3_000, "text 6000")]
    assert nested.count("str") < 100, f"Prefect visited {nested.count('str')} texts of the partitions"
