"""Splits and the seed batch.

Why carve the test and calibration sets first, once, and stratified: active
learning chooses its own training data, so any evaluation on data it could
have chosen is biased. The frozen test set and the random calibration slice
are drawn before any strategy runs and are never offered to one.

Seed selection: stratified random when labels are known (every class gets at
least one example so the first model can predict every class); k-means
cluster representatives when they are not (cover the pool's main modes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse


class SplitError(ValueError):
    """The data cannot be split as configured (too few labelled rows, ...)."""


def stratified_sample(labels: pd.Series, n: int, rng: np.random.Generator) -> list:
    """Pick ``n`` index values with class shares proportional to ``labels``,
    at least one per class when ``n`` allows (largest-remainder rounding)."""
    if n >= len(labels):
        return list(labels.index)
    counts = labels.value_counts().sort_index()
    k = len(counts)
    base = np.minimum(counts.values, 1 if n >= k else 0)
    rest = n - base.sum()
    avail = counts.values - base
    share = avail / max(avail.sum(), 1) * rest
    take = base + np.floor(share).astype(int)
    remainder = share - np.floor(share)
    for i in np.argsort(-remainder, kind="stable")[: n - take.sum()]:
        if take[i] < counts.values[i]:
            take[i] += 1
    # Top up if rounding and per-class caps left a shortfall.
    short = n - take.sum()
    for i in np.argsort(-(counts.values - take), kind="stable"):
        if short <= 0:
            break
        add = min(short, counts.values[i] - take[i])
        take[i] += add
        short -= add
    chosen: list = []
    for cls, t in zip(counts.index, take):
        members = labels.index[labels.values == cls].to_numpy()
        chosen.extend(rng.choice(members, size=int(t), replace=False).tolist())
    return chosen


def carve_splits(
    frame: pd.DataFrame,
    *,
    test_size: int,
    calibration_size: int,
    seed_size: int,
    seed_method: str = "stratified",
    random_state: int = 0,
    features: sparse.spmatrix | np.ndarray | None = None,
) -> pd.Series:
    """Assign each row of ``frame`` (columns id, text, label) a split.

    Returns a Series aligned with ``frame.index`` holding ``test``,
    ``calibration``, ``seed`` or ``pool``. Test and calibration rows need
    known labels; the seed may come from unlabelled rows (k-means).
    """
    rng = np.random.default_rng(random_state)
    split = pd.Series("pool", index=frame.index, dtype=object)
    labelled = frame["label"].notna() if "label" in frame else pd.Series(False, index=frame.index)
    need = test_size + calibration_size
    if labelled.sum() < need:
        raise SplitError(
            f"the frozen test set ({test_size}) and calibration slice ({calibration_size}) need {need} rows "
            f"with known labels, but the data has {int(labelled.sum())}; lower splits.test_size / "
            f"splits.calibration_size or provide more labelled rows"
        )
    lab = frame.loc[labelled, "label"].astype(str)
    test_idx = stratified_sample(lab, test_size, rng)
    split.loc[test_idx] = "test"
    cal_idx = stratified_sample(lab.drop(index=test_idx), calibration_size, rng)
    split.loc[cal_idx] = "calibration"

    remaining = frame.index[split == "pool"]
    if len(remaining) <= seed_size:
        raise SplitError(
            f"only {len(remaining)} rows remain after the test and calibration splits; the seed "
            f"({seed_size}) would leave nothing to query"
        )
    if seed_method == "stratified":
        rem_lab = frame.loc[remaining, "label"]
        if rem_lab.isna().any():
            raise SplitError("seed_method 'stratified' needs known labels on every pool row; use 'kmeans'")
        seed_idx = stratified_sample(rem_lab.astype(str), seed_size, rng)
    elif seed_method == "kmeans":
        if features is None:
            raise SplitError("seed_method 'kmeans' needs features")
        pos = frame.index.get_indexer(remaining)
        seed_pos = kmeans_representatives(features[pos], seed_size, random_state)
        seed_idx = list(remaining[seed_pos])
    else:
        raise SplitError(f"unknown seed method {seed_method!r}")
    split.loc[seed_idx] = "seed"
    return split


def kmeans_representatives(X: sparse.spmatrix | np.ndarray, k: int, random_state: int = 0) -> list[int]:
    """Row positions of the item closest to each of ``k`` k-means centroids (distinct rows)."""
    from sklearn.cluster import MiniBatchKMeans

    k = min(k, X.shape[0])
    km = MiniBatchKMeans(n_clusters=k, random_state=random_state, n_init=3, batch_size=1024).fit(X)
    chosen: list[int] = []
    taken: set[int] = set()
    dist = km.transform(X)  # (n, k) distances to centroids
    for c in range(k):
        for r in np.argsort(dist[:, c], kind="stable"):
            if int(r) not in taken:
                taken.add(int(r))
                chosen.append(int(r))
                break
    return chosen
