"""Splits and the seed batch.

Why carve the test and calibration sets first, once, and stratified: active
learning chooses its own training data, so any evaluation on data it could
have chosen is biased. The frozen test set and the random calibration slice
are drawn before any strategy runs and are never offered to one.

Seed selection: stratified random when labels are known (every class gets at
least one example so the first model can predict every class); k-means
cluster representatives when they are not (cover the pool's main modes);
keyword rules from the config when a team knows a few tell-tale words per
class (the cheapest way to make sure rare classes are in the first batch;
the keyword only picks the item, annotators still give the label).
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from labelloop.tasks.errors import LabelloopError


class SplitError(LabelloopError, ValueError):
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
    keywords: Mapping[str, Sequence[str]] | None = None,
) -> pd.Series:
    """Assign each row of ``frame`` (columns id, text, label) a split.

    Returns a Series aligned with ``frame.index`` holding ``test``,
    ``calibration``, ``seed`` or ``pool``. With enough known labels the test set
    and the calibration slice are stratified samples of the labelled rows.
    With fewer (a corpus that arrives unlabelled) both are drawn uniformly at
    random from all rows and people label them (``split.attrs["by_people"]`` is
    True): uniform, because an evaluation set must look like the data the
    model will meet, and nothing is known yet to stratify on. A size of 0
    means the split comes from a file of its own (``[splits] test_path``).
    """
    rng = np.random.default_rng(random_state)
    split = pd.Series("pool", index=frame.index, dtype=object)
    labelled = frame["label"].notna() if "label" in frame else pd.Series(False, index=frame.index)
    need = test_size + calibration_size
    if len(frame) <= need + seed_size:
        raise SplitError(
            f"the frozen test set ({test_size}), calibration slice ({calibration_size}) and seed ({seed_size}) "
            f"need more than {need + seed_size} rows, but the data has {len(frame)}; lower splits.test_size / "
            f"splits.calibration_size / splits.seed_size or provide more rows"
        )
    split.attrs["by_people"] = bool(need) and int(labelled.sum()) < need
    if split.attrs["by_people"]:
        order = rng.permutation(len(frame))
        split.iloc[order[:test_size]] = "test"
        split.iloc[order[test_size:need]] = "calibration"
    else:
        lab = frame.loc[labelled, "label"].astype(str)
        test_idx = stratified_sample(lab, test_size, rng) if test_size else []
        split.loc[test_idx] = "test"
        cal_idx = stratified_sample(lab.drop(index=test_idx), calibration_size, rng) if calibration_size else []
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
    elif seed_method == "keywords":
        if not keywords:
            raise SplitError("seed_method 'keywords' needs keyword rules ([splits.keywords])")
        seed_idx, counts = keyword_seed(frame.loc[remaining, "text"], keywords, seed_size, rng)
        split.attrs["seed_counts"] = counts  # for set-up's summary line
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


def default_seed_method(configured: str, explicit: bool, n_known: int, n_rows: int, has_keywords: bool) -> str:
    """The seed method set-up uses: ``configured``, unless it is stratified and the pool rows lack
    labels, in which case a method that needs none: keyword rules when the config has them, else
    k-means representatives. Data with no label at all always switches (``labelloop init`` writes
    ``seed_method = "stratified"`` into every config); partly labelled data switches only when the
    method was not asked for, so an explicit choice gets set-up's row-by-row error instead."""
    if configured != "stratified" or n_known >= n_rows or (explicit and n_known > 0):
        return configured
    return "keywords" if has_keywords else "kmeans"


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


def keyword_patterns(rules: Mapping[str, Sequence[str]]) -> dict[str, re.Pattern[str]]:
    """One case-insensitive whole-word pattern per label (keywords may be phrases).

    Whole words so that ``"cat"`` does not pick "category"; keywords are taken
    literally (no regex syntax to get wrong in a TOML file).
    """
    out: dict[str, re.Pattern[str]] = {}
    for label, words in rules.items():
        words = [w.strip() for w in words if w and w.strip()]
        if not words:
            raise SplitError(f"keyword rule for label {label!r} has no keywords")
        alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
        out[label] = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    return out


def keyword_seed(texts: pd.Series, rules: Mapping[str, Sequence[str]], n: int, rng: np.random.Generator,
                 ) -> tuple[list, dict[str, int]]:
    """Up to ``n`` seed rows chosen by keyword rules, spread evenly over the rules' labels.

    Labels take turns (round-robin) so a rare class with one good keyword gets as
    many seed rows as a common one. Within a label, rows that match only that
    label's keywords come first (a clearer example), in a random order from
    ``rng``; then rows that also match another label. When the rules match fewer
    than ``n`` rows the seed is topped up with random unmatched rows, so the seed
    size (and the label budget it stands for) does not depend on the keywords.
    Returns the chosen index labels and counts per label plus ``"(random top-up)"``.
    """
    pats = keyword_patterns(rules)
    hits = {lab: texts.astype(str).map(lambda t, p=pat: bool(p.search(t))) for lab, pat in pats.items()}
    n_labels_hit = sum(h.astype(int) for h in hits.values())
    queues: dict[str, list] = {}
    for lab, h in hits.items():
        clear = list(texts.index[h & (n_labels_hit == 1)])
        mixed = list(texts.index[h & (n_labels_hit > 1)])
        queues[lab] = [clear[i] for i in rng.permutation(len(clear))] + [mixed[i] for i in rng.permutation(len(mixed))]
    chosen: list = []
    taken: set = set()
    counts = {lab: 0 for lab in pats}
    while len(chosen) < n and any(queues.values()):
        for lab in pats:
            q = queues[lab]
            while q and q[0] in taken:
                q.pop(0)
            if q and len(chosen) < n:
                row = q.pop(0)
                taken.add(row)
                chosen.append(row)
                counts[lab] += 1
    rest = [i for i in texts.index if i not in taken]
    top_up = [rest[i] for i in rng.permutation(len(rest))[: max(0, n - len(chosen))]]
    counts["(random top-up)"] = len(top_up)
    return chosen + top_up, counts
