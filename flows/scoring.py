"""Pool scoring and candidate selection, partitioned over a Prefect task runner.

A pool of a million texts scored in one piece needs its whole feature matrix
and probability table in one process. Cut into partitions of ``[scale]
partition_size`` texts, every partition is one Prefect task that vectorises
its texts with the frozen, pre-fitted featuriser (no refit: a partition needs
nothing but its own texts), computes class probabilities and returns either
its rows (:func:`score_pool`) or only its best candidates
(:func:`select_from_pool`). The tasks run on a task runner:

* ``task_runner = "threads"`` (default): Prefect's ``ThreadPoolTaskRunner``
  in this process. Cheap (no copies of model or texts), but tokenising holds
  the GIL, so it overlaps little more than the sparse products.
* ``task_runner = "dask"``: ``prefect_dask.DaskTaskRunner`` on the cluster at
  ``dask_address`` (an existing scheduler, ``tcp://host:8786``) or, when no
  address is set, on a local cluster of ``dask_workers`` processes.

Results never depend on the runner, the partition size or the order in which
partitions finish: partitions are merged in order of their global row
numbers, ties are broken by the lower row, and the random share uses a
uniform draw per row derived from (seed, global row number) by a hash
(splitmix64), so a row's draw is the same whatever partition it lands in.

:func:`select_from_pool` keeps memory bounded in the pool size: each
partition keeps its top ``k`` rows by the strategy's score, its ``k`` lowest
draws and, with class quotas, its top rows per predicted class, and drops the
rest; the merge keeps the global top ``k`` of those. The batch is then chosen
by :func:`tasks.query.select_batch` on that short list, so the batch policy
(diversity, quotas, near-duplicate guard) is the same code as for small
pools. For per-item strategies (least-confidence, margin, entropy,
cluster-margin) the strategy share is exactly what ``select_batch`` would
pick on the whole pool; pool-wide strategies (qbc, density, coreset,
diversity-random) see a short list of the most uncertain plus uniformly
drawn rows, a pre-filter.
"""

from __future__ import annotations

import atexit
import math
import os
from collections import deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse as sp
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import opaque

from labelloop.flows.logs import progress
from labelloop.tasks import query
from labelloop.tasks.train import predict_proba_aligned

DEFAULT_PARTITION_SIZE = 200_000
"""Texts per partition. Why 200,000 and not 50,000 (issue 16): each partition is a Prefect task run,
which costs 0.3-0.4 s of API round trips on a 2-core machine, 6-8 s of a 1M-text round at 50,000;
threads give no speed-up on tokenising (the GIL), so smaller partitions bought nothing but that cost.
200,000 TF-IDF rows are about 60 MB of features; at most two partitions per worker are in flight."""


@dataclass(frozen=True)
class ScaleSettings:
    """How the pool is partitioned and where the partitions run (``[scale]`` in the campaign file)."""

    partition_size: int = DEFAULT_PARTITION_SIZE
    task_runner: str = "threads"  # threads | dask
    dask_address: str | None = None  # tcp://scheduler:8786; None with "dask": a local cluster
    dask_workers: int = 2  # local cluster only
    max_workers: int | None = None  # threads only (None: one per core)

    @classmethod
    def from_config(cls, scale: Any | None) -> "ScaleSettings":
        if scale is None:
            return cls()
        if isinstance(scale, ScaleSettings):
            return scale
        return cls(partition_size=int(scale.partition_size), task_runner=str(scale.task_runner),
                   dask_address=scale.dask_address or None, dask_workers=int(scale.dask_workers),
                   max_workers=scale.max_workers)


def _partitions(n: int, size: int) -> list[tuple[int, int]]:
    size = max(1, int(size))
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def _threads(settings: ScaleSettings) -> int:
    return settings.max_workers or os.cpu_count() or 1


_LOCAL_CLUSTERS: dict[int, Any] = {}


def _local_cluster(workers: int) -> Any:
    """This process's local Dask cluster of ``workers`` worker processes, started on first use and
    closed at exit: a round scores a pool once per arm, and ``labelloop run`` goes through many rounds,
    so starting a cluster (seconds: every worker imports Prefect and scikit-learn) each time would cost
    more than scoring a small pool."""
    if workers not in _LOCAL_CLUSTERS:
        import logging

        from distributed import LocalCluster

        logging.getLogger("distributed").setLevel(logging.WARNING)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        atexit.register(cluster.close)
        _LOCAL_CLUSTERS[workers] = cluster
    return _LOCAL_CLUSTERS[workers]


@contextmanager
def task_runner(settings: ScaleSettings) -> Iterator[Any]:
    """An entered Prefect task runner for ``settings`` (threads or Dask)."""
    if settings.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as err:  # pragma: no cover - prefect-dask is a declared extra
            raise RuntimeError(
                "[scale] task_runner = \"dask\" needs prefect-dask: pip install 'labelloop[dask]'") from err
        if settings.dask_address:
            runner = DaskTaskRunner(address=settings.dask_address)
        else:
            runner = DaskTaskRunner(cluster=_local_cluster(settings.dask_workers))  # not closed by the runner
    elif settings.task_runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        runner = ThreadPoolTaskRunner(max_workers=_threads(settings))
    else:
        raise ValueError(f"unknown task runner {settings.task_runner!r}; use 'threads' or 'dask'")
    with runner:
        yield runner


@contextmanager
def _outside_task_run() -> Iterator[None]:
    """Hide the enclosing task run's context while partitions are submitted.

    prefect-dask ships the caller's task-run context, *including that task's
    parameters*, to the workers; the round's ``query_batch`` task takes the
    open campaign (ledger connection, backend client), which cannot be
    pickled. Submitted from the flow-run context alone, the partitions are
    task runs of the round's flow run instead of children of ``query_batch``.
    """
    from prefect.context import TaskRunContext

    token = TaskRunContext.__var__.set(None)
    try:
        yield
    finally:
        TaskRunContext.__var__.reset(token)


def _run_partitions(fn: Any, parameters: list[dict[str, Any]], settings: ScaleSettings) -> list[Any]:
    """Run one task per partition and return their results in partition order.

    At most two partitions per worker are in flight, and a partition's
    future is dropped as soon as its result is in: a Dask cluster then holds
    the inputs and outputs of a few partitions, not of the whole pool
    (submitting a million texts at once put all of them, the model once per
    partition and every partition's result into the scheduler and workers).

    On the thread runner every parameter goes in Prefect's ``opaque`` annotation: by default
    Prefect walks each element of a collection parameter, once when it creates the task run
    (looking for upstream futures) and once when it runs it (resolving them), about 1.7 s
    each per 200,000 texts on this kind of machine, 15 s of a 1M-text round. Partition
    parameters never hold futures; the task still receives the plain values. Not on Dask:
    its serialisation turns the annotation (a tuple subclass) into a plain tuple on the way
    to the worker, and there the pickling of each partition costs more than the walk.
    """
    with task_runner(settings) as runner:
        if settings.task_runner == "dask":
            workers = sum(runner.client.nthreads().values()) if settings.dask_address else settings.dask_workers
            submit_context: Any = _outside_task_run
        else:
            workers = _threads(settings)
            submit_context = nullcontext
        wrap = (lambda value: value) if settings.task_runner == "dask" else opaque
        in_flight: deque[Any] = deque()
        results = []
        for p in parameters:
            with submit_context():
                in_flight.append(runner.submit(fn, {name: wrap(value) for name, value in p.items()}))
            if len(in_flight) >= 2 * max(1, workers):
                results.append(in_flight.popleft().result())
        while in_flight:
            results.append(in_flight.popleft().result())
        return results


# --------------------------------------------------------------------------- plain scoring
@task(name="score-partition", cache_policy=NO_CACHE, persist_result=False)
def score_partition(model: Any, vec: Any, texts: Sequence[str], classes: Sequence[str]) -> tuple[Any, np.ndarray]:
    """Features (sparse TF-IDF or dense embeddings) and aligned class probabilities of one partition."""
    X = vec.transform(list(texts))
    return X, predict_proba_aligned(model, X, classes, features=True)


PROGRESS_CHUNK = 5_000  # texts per progress step when transforming in one process


def transform_with_progress(vec: Any, texts: Sequence[str], what: str) -> Any:
    """``vec.transform(texts)``, in pieces of :data:`PROGRESS_CHUNK` texts with a progress bar.

    The same matrix as one call: the campaign's featurisers transform each text on its own
    (TF-IDF rows with frozen idf, per-text embeddings), so stacking the pieces' rows in order
    changes nothing. The bar (or plain line) shows only when the work lasts (flows.logs.progress).
    """
    texts = list(texts)
    if len(texts) <= PROGRESS_CHUNK:
        return vec.transform(texts)
    blocks = []
    with progress(what, len(texts), "texts") as bar:
        for a in range(0, len(texts), PROGRESS_CHUNK):
            piece = texts[a:a + PROGRESS_CHUNK]
            blocks.append(vec.transform(piece))
            bar.advance(len(piece))
    return _stack(blocks)


def score_pool(model: Any, vec: Any, texts: Sequence[str], classes: Sequence[str], *,
               scale: Any | None = None) -> tuple[Any, np.ndarray]:
    """(features, probabilities) for ``texts``, probabilities aligned to ``classes``.

    A pool no larger than one partition is scored in one piece in this
    process (the common case, no task-runner overhead). A larger one is cut
    into partitions scored on the configured task runner and stacked back in
    order: the result is the same matrix and table as in one piece.
    """
    settings = ScaleSettings.from_config(scale)
    texts = list(texts)
    if len(texts) <= settings.partition_size:
        X = transform_with_progress(vec, texts, "scoring the pool")
        return X, predict_proba_aligned(model, X, classes, features=True)
    parts = _partitions(len(texts), settings.partition_size)
    results = _run_partitions(score_partition, [{"model": model, "vec": vec, "texts": texts[a:b],
                                                  "classes": list(classes)} for a, b in parts], settings)
    return _stack([r[0] for r in results]), np.vstack([r[1] for r in results])


def _stack(blocks: list[Any]) -> Any:
    """Row-stack feature blocks: sparse TF-IDF stays sparse, dense embeddings stay dense."""
    return sp.vstack(blocks, format="csr") if sp.issparse(blocks[0]) else np.vstack(blocks)


# --------------------------------------------------------------------------- draws
def uniform_draws(seed: int, rows: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) draw per global row number, independent of partitioning (splitmix64)."""
    with np.errstate(over="ignore"):
        z = (np.asarray(rows, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64(0x632BE59BD9B4E019))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# --------------------------------------------------------------------------- top-k selection
@dataclass
class Candidates:
    """A short list of pool rows: global row numbers, features, probabilities, scores and draws."""

    rows: np.ndarray
    X: Any
    proba: np.ndarray | None
    score: np.ndarray | None
    draw: np.ndarray

    def take(self, idx: np.ndarray) -> "Candidates":
        idx = np.asarray(idx, dtype=np.int64)
        return Candidates(self.rows[idx], self.X[idx], None if self.proba is None else self.proba[idx],
                          None if self.score is None else self.score[idx], self.draw[idx])

    @staticmethod
    def concat(parts: list["Candidates"]) -> "Candidates":
        parts = [p for p in parts if len(p.rows)]
        if not parts:
            return Candidates(np.zeros(0, np.int64), sp.csr_matrix((0, 0)), None, None, np.zeros(0))
        return Candidates(
            np.concatenate([p.rows for p in parts]), _stack([p.X for p in parts]),
            None if parts[0].proba is None else np.vstack([p.proba for p in parts]),
            None if parts[0].score is None else np.concatenate([p.score for p in parts]),
            np.concatenate([p.draw for p in parts]))


def _top(values: np.ndarray, rows: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """Positions of the ``k`` largest (or smallest) values; ties broken by the lower global row."""
    if k <= 0 or len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    key = -values if largest else values
    order = np.lexsort((rows, key))
    return order[:k]


def _keep(c: Candidates, k_score: int, k_random: int, k_class: int) -> Candidates:
    """The union of the top ``k_score`` by score, the ``k_random`` lowest draws and the top
    ``k_class`` per predicted class, in global row order."""
    keep = [_top(c.draw, c.rows, k_random, largest=False)]
    if c.score is not None:
        keep.append(_top(c.score, c.rows, k_score, largest=True))
        if k_class > 0 and c.proba is not None:
            pred = c.proba.argmax(axis=1)
            for j in np.unique(pred):
                members = np.flatnonzero(pred == j)
                keep.append(members[_top(c.score[members], c.rows[members], k_class, largest=True)])
    idx = np.unique(np.concatenate(keep))
    idx = idx[np.argsort(c.rows[idx], kind="stable")]
    return c.take(idx)


def _proxy(strategy: str) -> str | None:
    """The per-item score used to short-list candidates for ``strategy`` (None: draws only)."""
    kind = query.get_strategy(strategy).kind
    if kind == "per-item":
        return strategy
    if kind == "random":
        return None
    return "entropy"  # pool-wide strategies (qbc, density, coreset, diversity-random) see uncertain + random rows


@task(name="shortlist-partition", cache_policy=NO_CACHE, persist_result=False)
def shortlist_partition(model: Any, vec: Any, texts: Sequence[str], start: int, classes: Sequence[str],
                        proxy: str | None, seed: int, k_score: int, k_random: int, k_class: int,
                        need_proba: bool) -> Candidates:
    """Score one partition and keep only its short list."""
    X = vec.transform(list(texts))
    rows = np.arange(start, start + X.shape[0], dtype=np.int64)
    proba = predict_proba_aligned(model, X, classes, features=True) if (need_proba or proxy) else None
    score = query.strategy_scores(proxy, proba) if proxy else None
    X = X.tocsr() if sp.issparse(X) else np.asarray(X)  # TF-IDF rows stay sparse, embeddings dense
    return _keep(Candidates(rows, X, proba, score, uniform_draws(seed, rows)), k_score, k_random, k_class)


def shortlist(model: Any, vec: Any, texts: Sequence[str], classes: Sequence[str], *, strategy: str, seed: int,
              k_score: int, k_random: int, k_class: int = 0, need_proba: bool = True,
              scale: Any | None = None) -> Candidates:
    """The pool's short list, computed partition by partition on the configured task runner."""
    settings = ScaleSettings.from_config(scale)
    texts = list(texts)
    proxy = _proxy(strategy)
    params = [{"model": model, "vec": vec, "texts": texts[a:b], "start": a, "classes": list(classes),
               "proxy": proxy, "seed": seed, "k_score": k_score, "k_random": k_random, "k_class": k_class,
               "need_proba": need_proba}
              for a, b in _partitions(len(texts), settings.partition_size)]
    if len(params) <= 1:
        parts = [shortlist_partition.fn(**p) for p in params]
    else:
        parts = _run_partitions(shortlist_partition, params, settings)
    return _keep(Candidates.concat(parts), k_score, k_random, k_class)


def select_from_pool(model: Any, vec: Any, texts: Sequence[str], classes: Sequence[str], batch_size: int,
                     strategy: str, seed: int, *, random_share: float = 0.10, X_labelled: Any = None,
                     y_labelled: Sequence[str] | None = None, class_quota: float = 0.0,
                     near_duplicate_threshold: float | None = 0.95, candidate_factor: int = 10,
                     scale: Any | None = None) -> list[query.Pick]:
    """Choose a batch from a pool of any size with bounded memory; picks carry global row numbers.

    The random share is the ``round(batch * random_share)`` rows with the
    lowest per-row draws over the *whole* pool (near-duplicates skipped), so
    it stays a uniform sample that the strategy cannot bias. The rest is
    ``tasks.query.select_batch`` on the merged short list (top
    ``candidate_factor x batch`` rows by the strategy's score, plus
    per-class candidates when ``class_quota > 0``), with the random picks'
    near-duplicates removed from it.
    """
    n = len(texts)
    if batch_size <= 0 or n == 0:
        return []
    batch = min(batch_size, n)
    n_random = query.random_count(strategy, batch, random_share)
    need = batch - n_random
    k_score = max(candidate_factor * max(need, 1), need + 50) if strategy != "random" else 0
    k_random = max(4 * n_random, n_random + 50)
    if strategy in ("coreset", query.FALLBACK_STRATEGY):  # spread strategies need a uniform sample to spread over
        k_random = max(k_random, candidate_factor * batch, batch + 50)
    k_class = max(10, int(math.ceil(class_quota * batch))) if class_quota > 0 else 0
    c = shortlist(model, vec, texts, classes, strategy=strategy, seed=seed, k_score=k_score, k_random=k_random,
                  k_class=k_class, need_proba=strategy != "random", scale=scale)

    Xn = query._l2_rows(c.X) if c.X.shape[0] else c.X
    picks: list[query.Pick] = []
    chosen: list[int] = []  # positions in c
    for i in np.lexsort((c.rows, c.draw)):
        if len(picks) >= n_random:
            break
        if near_duplicate_threshold is not None and chosen:
            sims = query._dense(Xn[chosen] @ Xn[int(i)].T).ravel()
            if query.too_similar(sims, near_duplicate_threshold).any():
                continue
        chosen.append(int(i))
        picks.append(query.Pick(index=int(c.rows[i]), score=float(c.draw[i]), reason="random"))
    if need <= 0:
        return picks

    free = np.ones(len(c.rows), dtype=bool)
    free[chosen] = False
    if chosen and near_duplicate_threshold is not None:
        sims = query._dense(Xn @ Xn[chosen].T)
        free &= ~query.too_similar(sims, near_duplicate_threshold).any(axis=1)
    rest = c.take(np.flatnonzero(free))
    if not len(rest.rows):
        return picks
    rng = np.random.default_rng([seed, 7])
    sub_strategy = "coreset" if strategy == query.FALLBACK_STRATEGY else strategy
    # The diversity candidates are capped at a share of the *pool's* unlabelled rows (as on the dense
    # path); this call sees only the short list, so the cap is handed over as a row count.
    cap = int(math.ceil(query.CANDIDATE_SHARE * (n - len(picks))))
    sub = query.select_round_batch(sub_strategy, need, rng, proba=rest.proba, X_pool=rest.X, X_labelled=X_labelled,
                                   y_labelled=y_labelled, estimator=model.named_steps["clf"], classes=list(classes),
                                   random_share=0.0, class_quota=class_quota,
                                   near_duplicate_threshold=near_duplicate_threshold,
                                   candidate_factor=candidate_factor, candidate_share=1.0, max_candidates=cap)
    for p in sub:
        reason = "diversity" if strategy == query.FALLBACK_STRATEGY and p.reason == "strategy" else p.reason
        picks.append(query.Pick(index=int(rest.rows[p.index]), score=float(p.score), reason=reason))
    return picks
