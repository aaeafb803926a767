"""The trust policy: which human labels are allowed to train a model.

Why a separate, pure module: this is the one decision that makes an unattended
campaign safe (a careless annotator or a confusing batch must never reach the
model), so it has to be testable on hand-made frames without a ledger, a
backend or Prefect. ``flows/trust.py`` gathers the inputs from the ledger,
calls :func:`decide` and stores what it returns.

One call decides, from *all* annotations so far (every round re-decides, so a
label excluded because of a bad annotator stays excluded and an annotator's
earlier labels are dropped as soon as they are caught):

1. **Annotator quality**: accuracy on gold items (known labels mixed into the
   batches) and a leave-one-out accuracy against the *other* annotators of
   the same items (used only while too few gold answers exist). An annotator
   below ``min_annotator_accuracy`` on enough answers raises an alert and, by
   policy, their labels are *excluded* (consensus recomputed without them) or
   *down-weighted* (their votes count ``downweight`` times a normal vote).
2. **Consensus** per item with the configured method (Dawid–Skene by default:
   it beat majority vote on the real RTE crowd, see benchmarks/AGREEMENT.md;
   it falls back to majority when items overlap too little) and a per-item
   confidence.
3. **Batch gate**: Krippendorff's alpha per batch (the items pushed in one
   round). A batch below ``alpha_gate`` is quarantined: its labels stay in the
   ledger but train nothing.
4. **Adjudication queue**: items whose consensus is a tie, below
   ``min_confidence``, rests on fewer than two trusted answers, or whose old
   answers were invalidated by a label-set change. An adjudicated label wins.
5. **Health check**: percent agreement on items picked by active learning vs
   items picked at random (the random share of each batch): if AL-selected
   items are much harder to agree on, the strategy is surfacing ambiguous or
   noisy items, and their labels deserve less trust.

Input frames share the ``tasks.agreement`` shape: long ``item_id, annotator,
label``; ``nan`` metrics mean "not enough information", never "bad".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from labelloop.tasks import agreement
from labelloop.tasks.annotate import stable_uniform

__all__ = [
    "AL_REASONS",
    "RANDOM_REASONS",
    "TrustPolicy",
    "TrustResult",
    "annotator_quality",
    "apply_adjudications",
    "batch_gate",
    "contract_offenders",
    "decide",
    "gold_count",
    "leave_one_out_reference",
    "metric_name",
    "select_gold",
    "weighted_dawid_skene",
    "weighted_majority",
    "agreement_by_selection",
]

AL_REASONS = ("strategy", "quota", "diversity")
RANDOM_REASONS = ("random",)
CONSENSUS_METHODS = ("auto", "dawid_skene", "one_coin", "majority")
ITEM_COLUMNS = ["batch", "status", "label", "confidence", "source", "method", "n_annotations",
                "n_trusted_annotations", "reason"]


@dataclass(frozen=True)
class TrustPolicy:
    """Knobs of the trust decision (``[trust]`` and ``gates.agreement_alpha`` in the config)."""

    consensus: str = "auto"  # "auto" (by the crowd's shape) | "dawid_skene" | "one_coin" | "majority"
    min_confidence: float = 0.7  # consensus confidence below this -> one more answer, then adjudication
    min_answers: int = 2  # counted answers an item needs before its consensus can be trusted
    gate_mode: str = "relative"  # "relative": batch vs the campaign's own agreement | "absolute": vs alpha_gate
    alpha_gate: float = 0.67  # absolute mode: batch Krippendorff alpha below this -> quarantine
    alpha_drop: float = 0.25  # relative mode: batch alpha this far below the other batches' -> quarantine
    min_batch_items: int = 10  # relative mode: items with >= 2 answers before a batch is judged
    max_overlap: int | None = None  # answers an unsure item may collect (one more at a time); None: need
    annotator_margin: float = 0.25  # an annotator this far below the median annotator is flagged too
    min_annotator_accuracy: float = 0.6
    min_gold_answers: int = 10  # gold answers before gold accuracy may flag an annotator
    min_consensus_answers: int = 30  # leave-one-out answers before that may flag one (no gold yet)
    annotator_policy: str = "exclude"  # "exclude" | "downweight"
    downweight: float = 0.25  # vote weight of a flagged annotator under "downweight"
    need: int = 3  # answers an item waits for before it is decided
    al_agreement_margin: float = 0.10  # health warning when AL agreement trails random by more
    min_health_items: int = 10  # items per group before the AL-vs-random comparison is made
    quarantine_undefined: bool = False  # quarantine a batch whose alpha is undefined (nan)
    adjudicated_as_gold: bool = False  # score annotators against adjudicated labels too
    ds_min_items: int | None = None  # overlapping items before Dawid-Skene is used; None: max(10, 5 K^2)

    def ds_min_items_for(self, n_labels: int) -> int:
        """Items with >= 2 answers Dawid-Skene needs: each annotator's K x K confusion has K(K-1)
        free parameters, and on a few dozen items EM fits noise (measured: a 25-item seed with 5
        labels gave labels that *no* annotator had chosen, at posterior 0.99)."""
        return self.ds_min_items if self.ds_min_items is not None else max(10, 5 * n_labels * n_labels)

    def __post_init__(self) -> None:
        if self.consensus not in CONSENSUS_METHODS:
            raise ValueError(f"unknown consensus method {self.consensus!r}; use one of {', '.join(CONSENSUS_METHODS)}")
        if self.gate_mode not in ("relative", "absolute"):
            raise ValueError(f"unknown gate_mode {self.gate_mode!r}; use 'relative' or 'absolute'")
        if self.annotator_policy not in ("exclude", "downweight"):
            raise ValueError(f"unknown annotator_policy {self.annotator_policy!r}; use 'exclude' or 'downweight'")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError("min_confidence must lie in [0, 1]")
        if not 0.0 < self.downweight <= 1.0:
            raise ValueError("downweight must lie in (0, 1]")
        if self.need < 1:
            raise ValueError("need must be >= 1")
        if self.min_answers < 1:
            raise ValueError("min_answers must be >= 1")
        if self.max_overlap is None or self.max_overlap < self.need:
            object.__setattr__(self, "max_overlap", self.need)  # never below the first round of answers


@dataclass
class TrustResult:
    """Everything one trust decision found.

    ``items``: one row per item seen (index ``item_id``; columns ``ITEM_COLUMNS``):
    ``status`` is trusted | adjudication | quarantined | pending | gold; ``source``
    is consensus | adjudicated. ``trusted`` is the training view: trusted items
    only, columns ``label, confidence, n_annotations, source``.
    """

    items: pd.DataFrame
    batches: pd.DataFrame
    annotators: pd.DataFrame
    health: dict[str, float]
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    method: str = "majority"
    fallback_reason: str | None = None
    method_reason: str = ""  # why this consensus model (the crowd's shape), for the report and the tag

    @property
    def trusted(self) -> pd.DataFrame:
        t = self.items[self.items["status"] == "trusted"]
        return t[["label", "confidence", "n_annotations", "source"]].copy()

    @property
    def adjudication_queue(self) -> pd.DataFrame:
        """Items waiting for an adjudicator: ``label``/``confidence`` are the consensus they would replace."""
        return self.items[self.items["status"] == "adjudication"][["batch", "label", "confidence", "reason"]].copy()


# --------------------------------------------------------------------------- helpers


def metric_name(prefix: str, name: str) -> str:
    """An MLflow-safe metric key (``annotator_accuracy_<name>``): e-mail addresses and the like
    keep their letters and digits, other characters become ``_``."""
    return f"{prefix}{re.sub(r'[^A-Za-z0-9_.-]', '_', str(name))}"


def _prepare(ann: pd.DataFrame) -> pd.DataFrame:
    df = ann[ann["label"].notna() & ann["item_id"].notna() & ann["annotator"].notna()].copy()
    df = df.astype({"item_id": str, "annotator": str, "label": str})
    return df.drop_duplicates(subset=["item_id", "annotator"], keep="last").reset_index(drop=True)


def _f(x: float | int | None) -> float:
    return float("nan") if x is None else float(x)


# --------------------------------------------------------------------------- weighted consensus


def weighted_majority(ann: pd.DataFrame, labels: Sequence[str], weights: Mapping[str, float]) -> pd.DataFrame:
    """Majority vote where annotator ``a`` casts ``weights.get(a, 1)`` votes
    (:func:`tasks.agreement.majority_vote` with weights)."""
    return agreement.majority_vote(_prepare(ann), labels, weights=weights)


def weighted_dawid_skene(ann: pd.DataFrame, labels: Sequence[str], weights: Mapping[str, float],
                         max_iter: int = 100, tol: float = 1e-6, smoothing: float = 0.01) -> pd.DataFrame:
    """Dawid–Skene consensus with annotator ``a`` tempered by ``weights[a]``
    (:func:`tasks.agreement.dawid_skene` with weights; confidence = posterior)."""
    return agreement.dawid_skene(_prepare(ann), labels, max_iter=max_iter, tol=tol, smoothing=smoothing,
                                 weights=weights).consensus


def _consensus(ann: pd.DataFrame, labels: Sequence[str], method: str, weights: Mapping[str, float] | None,
               min_items: int = 10) -> tuple[pd.DataFrame, str, str | None, str]:
    """Consensus with the configured method (``auto``: chosen by the crowd's shape, see
    :func:`tasks.agreement.choose_method`); returns (frame, method used, fallback reason, why)."""
    out = agreement.consensus(_prepare(ann), labels, method=method, weights=weights or None,  # type: ignore[arg-type]
                              min_overlapping_items=min_items)
    used = str(out.attrs.get("method", method))
    why = str(out.attrs.get("reason") or "")
    if out.attrs.get("converged") is False:
        why += f" (EM stopped at {out.attrs.get('iterations')} iterations without converging)"
    return out, used, out.attrs.get("fallback_reason"), why


# --------------------------------------------------------------------------- annotator quality


def leave_one_out_reference(ann: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Each annotation with the label the *other* annotators of its item agree on.

    ``ref`` is the strict-majority label of the others when at least two
    others answered (else ``None``). Unlike accuracy against a consensus the
    annotator voted in, this does not flatter an annotator with their own vote.
    """
    df = _prepare(ann)
    if df.empty:
        return df.assign(ref=pd.Series(dtype=object))
    enc = agreement._encode(df, labels)  # noqa: SLF001
    counts = enc.counts
    others = counts[enc.ii].copy()
    others[np.arange(len(df)), enc.kk] -= 1.0
    n_others = others.sum(axis=1)
    top = others.max(axis=1)
    win = others.argmax(axis=1)
    ok = (n_others >= 2) & (top > n_others / 2.0)
    ref = np.where(ok, np.asarray(labels, dtype=object)[win], None)
    return df.assign(ref=ref)


def annotator_quality(ann: pd.DataFrame, labels: Sequence[str], gold: pd.Series | None,
                      policy: TrustPolicy) -> pd.DataFrame:
    """Per annotator: gold accuracy, leave-one-out accuracy, which one counts, and the verdict.

    ``basis`` is ``gold`` when the annotator has ``min_gold_answers`` gold
    answers, else ``consensus`` (leave-one-out) with ``min_consensus_answers``,
    else ``insufficient`` (never flagged: an annotator is not condemned on
    three answers). ``flagged`` means accuracy on that basis is below
    ``min_annotator_accuracy``.
    """
    cols = ["n_gold", "gold_accuracy", "n_loo", "loo_accuracy", "basis", "accuracy", "flagged"]
    df = _prepare(ann)
    if df.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="annotator"))
    names = pd.Index(sorted(df["annotator"].unique()), name="annotator")
    if gold is not None and len(gold):
        g = agreement.annotator_accuracy(df, gold).reindex(names)
        n_gold, gold_acc = g["n"].fillna(0).astype(int), g["accuracy"]
    else:
        n_gold, gold_acc = pd.Series(0, index=names), pd.Series(np.nan, index=names)
    loo = leave_one_out_reference(df, labels).dropna(subset=["ref"])
    hit = (loo["label"] == loo["ref"]).groupby(loo["annotator"])
    n_loo = hit.size().reindex(names, fill_value=0).astype(int)
    loo_acc = hit.mean().reindex(names)
    out = pd.DataFrame({"n_gold": n_gold, "gold_accuracy": gold_acc, "n_loo": n_loo, "loo_accuracy": loo_acc},
                       index=names)
    use_gold = out["n_gold"] >= policy.min_gold_answers
    use_loo = ~use_gold & (out["n_loo"] >= policy.min_consensus_answers)
    out["basis"] = np.where(use_gold, "gold", np.where(use_loo, "consensus", "insufficient"))
    out["accuracy"] = np.where(use_gold, out["gold_accuracy"], np.where(use_loo, out["loo_accuracy"], np.nan))
    judged = out["basis"] != "insufficient"
    floor = pd.Series(policy.min_annotator_accuracy, index=names, dtype=float)
    if int(judged.sum()) >= 3:
        # Relative to this crowd: an annotator far below the median of the others on the same basis is
        # an outlier even where the absolute floor is lenient (a hard task lowers everyone alike).
        for basis in ("gold", "consensus"):
            on = out["basis"] == basis
            for name in out.index[on]:
                others = out.loc[on & (out.index != name), "accuracy"]
                if len(others) >= 2:
                    floor[name] = max(floor[name], float(others.median()) - policy.annotator_margin)
    out["flagged"] = judged & (out["accuracy"] < floor)
    return out[cols]


# --------------------------------------------------------------------------- batches and health


def batch_gate(ann: pd.DataFrame, batch_of: pd.Series, labels: Sequence[str], gate: float,
               quarantine_undefined: bool = False, *, mode: str = "absolute", drop: float = 0.25,
               min_items: int = 10) -> pd.DataFrame:
    """Krippendorff's alpha and percent agreement per batch, and the gate verdict.

    ``mode="absolute"``: a batch below ``gate`` is quarantined. ``mode="relative"``
    (the campaign default): a batch is judged against what this campaign's
    annotators reach on the *other* batches (``reference_alpha``, alpha over
    their items pooled) and quarantined only when it falls more than ``drop``
    below it, with at least ``min_items`` items of two or more answers.

    Why relative: real crowds disagree. RTE's ten MTurk workers per item reach
    alpha 0.24 while their majority vote is 90 % correct; an absolute 0.67
    gate quarantines every batch of such a crowd and the campaign stalls. What
    signals a problem is a batch far below the crowd's own level (a confusing
    batch, a broken task, a bad shift), which the relative rule catches. The
    first batch has no reference and passes with that said.

    ``status``: ``passed``, ``quarantined`` or ``undefined`` (alpha is nan: no
    item with two answers, or one label used throughout; quarantined only with
    ``quarantine_undefined``).
    """
    if mode not in ("absolute", "relative"):
        raise ValueError(f"unknown gate mode {mode!r}")
    cols = ["n_items", "n_annotations", "krippendorff_alpha", "percent_agreement", "reference_alpha",
            "status", "reason"]
    df = _prepare(ann)
    df["batch"] = df["item_id"].map(batch_of)
    df = df.dropna(subset=["batch"])
    rows = {}
    if len(df):
        enc = agreement._encode(df, labels)  # noqa: SLF001 - one encoding for every batch
        counts = enc.counts
        item_batch = df.drop_duplicates("item_id").set_index("item_id")["batch"].reindex(enc.items).to_numpy()
        n_ann = df.groupby("batch").size()
        for b in sorted(set(item_batch)):
            c = counts[item_batch == b]
            alpha, pa = _alpha_from_counts(c), agreement.percent_agreement_from_counts(c)
            ref = _alpha_from_counts(counts[item_batch != b]) if mode == "relative" else float("nan")
            n_pairable = int((c.sum(axis=1) >= 2).sum())
            if math.isnan(alpha):
                status = "quarantined" if quarantine_undefined else "undefined"
                reason = "alpha undefined (no item with two answers, or a single label used)"
            elif mode == "absolute":
                status, reason = (("quarantined", f"alpha {alpha:.3f} < gate {gate:.2f}") if alpha < gate
                                  else ("passed", f"alpha {alpha:.3f} >= gate {gate:.2f}"))
            elif math.isnan(ref):
                status, reason = "passed", f"alpha {alpha:.3f}; no other batch to compare with yet"
            elif n_pairable < min_items:
                status, reason = "passed", f"alpha {alpha:.3f} on {n_pairable} item(s): too few to judge"
            elif (upper := _alpha_upper_bound(c, b)) < ref - drop:
                status = "quarantined"
                reason = (f"alpha {alpha:.3f} (95% upper bound {upper:.3f}) is more than {drop:.2f} below the "
                          f"campaign's {ref:.3f}")
            else:
                status, reason = "passed", f"alpha {alpha:.3f} vs the campaign's {ref:.3f}"
            rows[int(b)] = (int(len(c)), int(n_ann[b]), alpha, pa, ref, status, reason)
    out = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    out.index.name = "batch"
    return out


def _alpha_upper_bound(counts: np.ndarray, batch: int, n_boot: int = 200) -> float:
    """One-sided 95 % bootstrap upper bound of a batch's alpha (items resampled, fixed seed).

    Why: alpha on a few dozen items with three answers each swings by +-0.15 from sampling alone;
    a batch is quarantined only when it is *confidently* far below the campaign, not when an
    honest batch of a hard task happens to draw its hardest items.
    """
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) < 2:
        return float("inf")
    rng = np.random.default_rng([len(pairable), int(batch)])  # deterministic: same verdict on a re-run
    draws = _alpha_of_resamples(pairable, rng.integers(0, len(pairable), (n_boot, len(pairable))))
    draws = draws[~np.isnan(draws)]
    return float(np.quantile(draws, 0.95)) if len(draws) else float("inf")


def _alpha_of_resamples(pairable: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Nominal alpha of each resample ``pairable[idx[b]]``, all resamples at once (nan when undefined).

    Why not the ``krippendorff`` package per draw: a round bootstraps every batch 200 times, and
    one call per draw was ~1 s of a warm round. Nominal alpha only needs per-item sums, so a draw is
    a weighted sum over items: with ``W[b, u]`` = times item ``u`` is drawn, ``n = W m``,
    ``sum_c o_cc = W a`` (``a_u = sum_c C_uc (C_uc - 1) / (m_u - 1)``), ``n_c = W C`` and
    ``alpha = 1 - (n - 1)(n - sum_c o_cc) / (n^2 - sum_c n_c^2)`` (Krippendorff 2011, nominal).
    Same values as the package (unit test).
    """
    m = pairable.sum(axis=1).astype(float)
    a = (pairable * (pairable - 1)).sum(axis=1) / (m - 1)
    weights = np.zeros((idx.shape[0], pairable.shape[0]))
    np.add.at(weights, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), 1.0)
    n, o, nc = weights @ m, weights @ a, weights @ pairable
    den = n * n - (nc * nc).sum(axis=1)
    ok = ((nc > 0).sum(axis=1) >= 2) & (den > 0)
    out = np.full(len(n), np.nan)
    out[ok] = 1.0 - (n[ok] - 1.0) * (n[ok] - o[ok]) / den[ok]
    return out


def _alpha_from_counts(counts: np.ndarray) -> float:
    """Nominal Krippendorff alpha from an items x labels count matrix (the ``krippendorff``
    package's ``value_counts`` form; nan when undefined, as in ``tasks.agreement``)."""
    import krippendorff

    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0 or (pairable.sum(axis=0) > 0).sum() < 2:
        return float("nan")
    return float(krippendorff.alpha(value_counts=pairable, level_of_measurement="nominal"))


def agreement_by_selection(ann: pd.DataFrame, reasons: pd.DataFrame | None, min_items: int = 10) -> dict[str, float]:
    """Percent agreement on AL-selected items vs on randomly selected items.

    ``reasons``: rows ``item_id, reason`` from the query ledger (an item may
    have several, e.g. picked by the AL arm and by the random arm). Percent
    agreement rather than alpha: AL batches have other class mixes than random
    ones, and alpha's chance correction would compare different baselines.
    ``nan`` when either group has fewer than ``min_items`` items with two answers.
    """
    out = {"agreement_al": float("nan"), "agreement_random": float("nan"), "n_al_items": 0.0,
           "n_random_items": 0.0, "agreement_al_minus_random": float("nan")}
    if reasons is None or reasons.empty or ann.empty:
        return out
    df = _prepare(ann)
    multi = df.groupby("item_id").size()
    pairable = set(multi.index[multi >= 2])
    al = set(reasons.loc[reasons["reason"].isin(AL_REASONS), "item_id"].astype(str)) & pairable
    rnd = set(reasons.loc[reasons["reason"].isin(RANDOM_REASONS), "item_id"].astype(str)) & pairable
    out["n_al_items"], out["n_random_items"] = float(len(al)), float(len(rnd))
    if len(al) >= min_items:
        out["agreement_al"] = agreement.percent_agreement(df[df["item_id"].isin(al)])
    if len(rnd) >= min_items:
        out["agreement_random"] = agreement.percent_agreement(df[df["item_id"].isin(rnd)])
    out["agreement_al_minus_random"] = out["agreement_al"] - out["agreement_random"]
    return out


# --------------------------------------------------------------------------- the decision


def decide(
    ann: pd.DataFrame,
    labels: Sequence[str],
    policy: TrustPolicy,
    *,
    batch_of: pd.Series | Mapping[str, int] | None = None,
    gold: pd.Series | Mapping[str, str] | None = None,
    adjudicated: pd.Series | Mapping[str, str] | None = None,
    reasons: pd.DataFrame | None = None,
    relabel: Iterable[str] = (),
    targets: Mapping[str, int] | None = None,
    exhausted: Iterable[str] = (),
) -> TrustResult:
    """The trust decision over all annotations so far (see the module docstring).

    Args:
        ann: long ``item_id, annotator, label`` (submitted answers, current label set).
        batch_of: item -> batch (the round its task was pushed in); default: column
            ``batch`` of ``ann``, else everything is batch 0.
        gold: item -> known label for gold items (scored, never trained on).
        adjudicated: item -> label decided by an adjudicator (wins over consensus).
        reasons: ``item_id, reason`` rows from the query ledger (health check).
        relabel: items whose earlier answers were invalidated by a label-set change.
        targets: item -> answers now asked for, where adaptive redundancy asked for more
            than ``policy.need``, or fewer where no more can come (a replayed history with two
            answers per item); default ``policy.need`` for every item.
        exhausted: items for which the backend can give no further answer (every recorded
            or simulated annotator has answered): unsure ones go straight to adjudication.
    """
    labels = list(labels)
    df = _prepare(ann)
    if batch_of is None:
        if "batch" in df.columns:
            last = df.drop_duplicates("item_id", keep="last")
            batch_of = pd.Series(last["batch"].to_numpy(), index=last["item_id"].to_numpy())
        else:
            batch_of = pd.Series(0, index=df["item_id"].unique())
    batch_of = pd.Series(batch_of, dtype=object)
    batch_of.index = batch_of.index.astype(str)
    gold_s = _series(gold)
    adj_s = _series(adjudicated)
    relabel = {str(i) for i in relabel}
    df = df[["item_id", "annotator", "label"]]

    # 1. annotator quality (gold, and adjudicated labels when the policy says so)
    reference = pd.concat([adj_s, gold_s]) if policy.adjudicated_as_gold else gold_s
    reference = reference[~reference.index.duplicated(keep="last")]
    quality = annotator_quality(df, labels, reference, policy)
    flagged = sorted(quality.index[quality["flagged"].astype(bool)])
    weights: dict[str, float] | None = None
    if flagged and policy.annotator_policy == "exclude":
        kept = df[~df["annotator"].isin(flagged)]
    else:
        kept = df
        if flagged:
            weights = {a: policy.downweight for a in flagged}
    quality["action"] = ""
    if flagged:
        quality.loc[flagged, "action"] = "excluded" if policy.annotator_policy == "exclude" else f"weight {policy.downweight:g}"

    # 2. consensus on what the policy keeps
    n_all = df.groupby("item_id").size()
    n_kept = kept.groupby("item_id").size()
    min_items = (policy.ds_min_items_for(len(labels)) if policy.consensus == "dawid_skene"
                 else (policy.ds_min_items or 10))
    cons, method, fallback, method_why = _consensus(kept, labels, policy.consensus, weights, min_items)
    # a consensus label that no counted answer gave is never trusted (EM can drift there on thin data)
    given = set(zip(kept["item_id"], kept["label"]))
    unsupported = pd.Series([(i, lbl) not in given for i, lbl in zip(cons.index, cons["label"])], index=cons.index,
                            dtype=bool)

    # 3. batch gate on complete items, without flagged annotators under either policy: the gate
    #    asks whether the reliable annotators agree (a flagged one is already handled above)
    target = pd.Series({str(k): int(v) for k, v in (targets or {}).items()}, dtype="int64")
    need_of = target.reindex(n_all.index).fillna(policy.need).astype(int)
    complete = set(n_all.index[n_all >= need_of])
    gate_frame = df[df["item_id"].isin(complete) & ~df["annotator"].isin(flagged)]
    gate_kw = dict(mode=policy.gate_mode, drop=policy.alpha_drop, min_items=policy.min_batch_items)
    batches = batch_gate(gate_frame, batch_of, labels, policy.alpha_gate, policy.quarantine_undefined, **gate_kw)
    raw = batch_gate(df[df["item_id"].isin(complete)], batch_of, labels, policy.alpha_gate, **gate_kw)
    batches["alpha_all_annotators"] = raw["krippendorff_alpha"].reindex(batches.index)
    quarantined_batches = set(batches.index[batches["status"] == "quarantined"])

    # 4. item status (vectorised: campaigns reach tens of thousands of items); the order of the
    #    rules below is the order of precedence (gold, adjudicated, relabel, pending, quarantined, ...)
    all_items = pd.Index(sorted(set(df["item_id"]) | set(adj_s.index) | relabel), name="item_id")
    min_trusted = min(policy.min_answers, policy.need)
    items = pd.DataFrame(index=all_items, columns=ITEM_COLUMNS)
    bo = batch_of.reindex(all_items)
    items["batch"] = pd.array([None if pd.isna(b) else int(b) for b in bo], dtype="Int64")
    c = cons.reindex(all_items)
    items["label"] = c["label"].astype(object)
    items["confidence"] = c["confidence"].astype(float)
    items["source"] = "consensus"
    items["method"] = method
    items["n_annotations"] = n_all.reindex(all_items).fillna(0).astype(int)
    nk = n_kept.reindex(all_items).fillna(0).astype(int)
    if weights is not None:
        # a down-weighted answer counts as ``downweight`` of an answer towards min_answers too, or two
        # flagged annotators alone would make an item trusted (their weights cancel in the vote share)
        w = df["annotator"].map(weights).fillna(1.0).astype(float)
        nk = np.floor(w.groupby(df["item_id"]).sum() + 1e-9).reindex(all_items).fillna(0).astype(int)
    items["n_trusted_annotations"] = nk
    n = items["n_annotations"]
    need = target.reindex(all_items).fillna(policy.need).astype(int)
    tie = c["tie"].fillna(False).astype(bool)
    conf = items["confidence"]
    in_q = items["batch"].isin(list(quarantined_batches)).fillna(False).astype(bool)
    is_gold = all_items.isin(gold_s.index)
    is_adj = all_items.isin(adj_s.index)
    is_rel = all_items.isin(list(relabel))
    reason_of = batches["reason"].to_dict()
    batch_reason = pd.Series([f"batch {b} quarantined ({reason_of.get(int(b), '')})" if not pd.isna(b) else ""
                              for b in items["batch"]], index=all_items, dtype=object)
    # An answered item that is not trustworthy yet asks one more annotator, up to max_overlap, before
    # an adjudicator is bothered: cheap answers first, expensive reviewers for what stays unclear.
    room = (n < policy.max_overlap) & ~all_items.isin([str(i) for i in exhausted])
    unsure = ((items["n_trusted_annotations"] < min_trusted) | items["label"].isna()
              | unsupported.reindex(all_items).fillna(False).astype(bool) | tie | (conf < policy.min_confidence))
    unsure_why = pd.Series(np.select(
        [(items["n_trusted_annotations"] < min_trusted) | items["label"].isna(),
         unsupported.reindex(all_items).fillna(False).astype(bool), tie],
        [nk.map(lambda k: f"only {k} trusted answer(s)").to_numpy(dtype=object),
         np.full(len(all_items), "consensus label given by no trusted annotator", dtype=object),
         np.full(len(all_items), "tie between labels", dtype=object)],
        default=conf.map(lambda x: f"confidence {x:.2f} < {policy.min_confidence:.2f}").to_numpy(dtype=object)),
        index=all_items, dtype=object)
    rules = [
        (is_gold, "gold", pd.Series("gold item (scores annotators, never trains)", index=all_items)),
        (is_adj, "trusted", pd.Series("adjudicated label wins", index=all_items)),
        (is_rel & (n < policy.need), "adjudication",
         pd.Series("label set changed: earlier answers need re-labelling", index=all_items)),
        ((n < need) & (need > policy.need), "needs_more",
         pd.Series([f"{k} of {t} answers (an extra answer was asked for)" for k, t in zip(n, need)],
                   index=all_items, dtype=object)),
        (n < need, "pending", n.map(lambda k: f"{k} of {policy.need} answers")),
        (in_q, "quarantined", batch_reason),
        (unsure & room, "needs_more", unsure_why + f"; one more answer asked for (up to {policy.max_overlap})"),
        (unsure, "adjudication", unsure_why),
    ]
    status = pd.Series("trusted", index=all_items, dtype=object)
    reason = pd.Series("", index=all_items, dtype=object)
    done = pd.Series(False, index=all_items)
    for mask, st, why in rules:
        m = pd.Series(np.asarray(mask, dtype=bool), index=all_items) & ~done
        status[m], reason[m] = st, why[m]
        done |= m
    items["status"], items["reason"] = status, reason
    if is_gold.any():
        items.loc[is_gold, "label"] = gold_s.reindex(all_items[is_gold]).to_numpy()
    if is_adj.any():
        adj_only = is_adj & ~is_gold
        items.loc[adj_only, "label"] = adj_s.reindex(all_items[adj_only]).to_numpy()
        items.loc[adj_only, ["confidence", "source", "method"]] = [1.0, "adjudicated", "adjudicator"]
    items["confidence"] = items["confidence"].astype(float)

    # consensus accuracy (reporting only: biased upwards by the annotator's own vote)
    decided = items[items["label"].notna() & items["status"].isin(["trusted", "quarantined", "adjudication"])]
    cacc = agreement.annotator_accuracy(df, decided["label"]) if len(df) else pd.DataFrame(columns=["n", "accuracy"])
    quality["n_consensus"] = cacc["n"].reindex(quality.index).fillna(0).astype(int)
    quality["consensus_accuracy"] = cacc["accuracy"].reindex(quality.index)

    # 5. health: AL-selected vs random items (kept answers, complete items)
    health = agreement_by_selection(gate_frame, reasons, policy.min_health_items)

    result = TrustResult(items=items, batches=batches, annotators=quality, health=health, metrics={},
                         method=method, fallback_reason=fallback, method_reason=method_why)
    _summarise(result, df, gate_frame, labels, policy)
    return result


def _series(x: pd.Series | Mapping[str, str] | None) -> pd.Series:
    if x is None:
        return pd.Series(dtype=object)
    s = pd.Series(x, dtype=object).dropna()
    s.index = s.index.astype(str)
    return s.astype(str)


def _summarise(r: TrustResult, df: pd.DataFrame, kept_complete: pd.DataFrame, labels: Sequence[str],
               policy: TrustPolicy) -> None:
    """Fill metrics, notes and tags from the decision (also re-run after adjudication)."""
    items, batches, q = r.items, r.batches, r.annotators
    complete_all = df[df["item_id"].isin(items.index[items["status"] != "pending"])]
    report = agreement.agreement_report(complete_all, labels) if len(complete_all) else {}
    status = items["status"].value_counts()
    m: dict[str, float] = {
        "krippendorff_alpha": _f(report.get("krippendorff_alpha")),
        "fleiss_kappa": _f(report.get("fleiss_kappa")),
        "mean_cohen_kappa": _f(report.get("mean_cohen_kappa")),
        "percent_agreement": _f(report.get("percent_agreement")),
        "krippendorff_alpha_trusted": agreement.krippendorff_alpha(kept_complete, labels) if len(kept_complete) else float("nan"),
        "n_trusted": float(status.get("trusted", 0)),
        "n_quarantined": float(status.get("quarantined", 0)),
        "n_quarantined_batches": float((batches["status"] == "quarantined").sum()) if len(batches) else 0.0,
        "n_adjudication_queue": float(status.get("adjudication", 0)),
        "n_adjudicated": float((items["source"] == "adjudicated").sum()) if len(items) else 0.0,
        "n_pending": float(status.get("pending", 0)),
        "n_needs_more": float(status.get("needs_more", 0)),
        "n_gold_items": float(status.get("gold", 0)),
        "n_annotators_flagged": float(q["flagged"].astype(bool).sum()) if len(q) else 0.0,
        "consensus_dawid_skene": 1.0 if r.method == "dawid_skene" else 0.0,
        "consensus_one_coin": 1.0 if r.method == "one_coin" else 0.0,
        "agreement_al": r.health["agreement_al"],
        "agreement_random": r.health["agreement_random"],
        "agreement_al_minus_random": r.health["agreement_al_minus_random"],
    }
    if len(batches):
        m["batch_alpha_min"] = float(batches["krippendorff_alpha"].min())
        m["batch_alpha_latest"] = float(batches["krippendorff_alpha"].iloc[-1])
    for name, row in q.iterrows():
        if row["n_gold"] > 0:
            m[metric_name("annotator_accuracy_", name)] = float(row["gold_accuracy"])
        if row["n_loo"] > 0:
            m[metric_name("annotator_loo_accuracy_", name)] = float(row["loo_accuracy"])
    r.metrics = m

    notes: list[str] = []
    quarantined = batches[batches["status"] == "quarantined"] if len(batches) else batches
    for b, row in quarantined.iterrows():
        notes.append(f"batch {b} quarantined: {row['reason']} ({row['n_items']} items kept in the ledger, not trained on)")
    alerts = []
    for name, row in q[q["flagged"].astype(bool)].iterrows():
        n = row["n_gold"] if row["basis"] == "gold" else row["n_loo"]
        alerts.append(f"{name}: {row['basis']} accuracy {row['accuracy']:.2f} over {int(n)} answers "
                      f"< {policy.min_annotator_accuracy:.2f}, {row['action']}")
    notes.extend(f"annotator alert: {a}" for a in alerts)
    if r.fallback_reason:
        notes.append(f"consensus fell back to majority vote: {r.fallback_reason}")
    if m["n_needs_more"]:
        notes.append(f"{int(m['n_needs_more'])} item(s) wait for one more answer (adaptive redundancy, up to "
                     f"{policy.max_overlap} per item)")
    if m["n_adjudication_queue"]:
        notes.append(f"{int(m['n_adjudication_queue'])} item(s) await adjudication")
    d = r.health["agreement_al_minus_random"]
    if not math.isnan(d) and d < -policy.al_agreement_margin:
        notes.append(f"health: agreement on AL-selected items ({r.health['agreement_al']:.2f}) is lower than on "
                     f"random picks ({r.health['agreement_random']:.2f}) by {-d:.2f}: the strategy may be picking "
                     "ambiguous or noisy items")
    r.notes = notes
    r.tags = {
        "labelloop.quarantine": "; ".join(f"batch {b}: {row['reason']}" for b, row in quarantined.iterrows()) or "none",
        "labelloop.annotator_alerts": "; ".join(alerts) or "none",
        "labelloop.consensus": r.method,
        "labelloop.consensus_reason": r.method_reason or "-",
    }


def apply_adjudications(r: TrustResult, answers: Mapping[str, str], labels: Sequence[str],
                        df: pd.DataFrame, policy: TrustPolicy) -> TrustResult:
    """Items an adjudicator has answered become trusted with the adjudicated label.

    Every answered item, not only those queued now: a review answered after more answers made the
    consensus confident still wins, as :func:`decide` ranks it next round ("adjudicated label
    wins"); applying it only then left this round's decision, and an export taken after a campaign's
    last round, with the consensus label. Gold items keep their known label.
    ``df`` is the annotation frame :func:`decide` got (for the summary figures).
    ``n_adjudication_queue`` then counts the items still waiting.
    """
    items = r.items.copy()
    done = [i for i in answers if i in items.index and items.at[i, "status"] != "gold"]
    unknown = sorted({str(a) for a in (answers[i] for i in done)} - set(labels))
    if unknown:
        raise ValueError(f"adjudicated labels {unknown} are not in the label set {list(labels)}")
    for i in done:
        items.loc[i, ["status", "label", "confidence", "source", "method", "reason"]] = [
            "trusted", answers[i], 1.0, "adjudicated", "adjudicator", "adjudicated label wins"]
    out = replace(r, items=items)
    flagged = set(r.annotators.index[r.annotators["flagged"].astype(bool)]) if len(r.annotators) else set()
    prepared = _prepare(df)
    kept = prepared[~prepared["annotator"].isin(flagged)]
    kept_complete = kept[kept["item_id"].isin(items.index[items["status"] != "pending"])]
    _summarise(out, prepared, kept_complete, labels, policy)
    return out


# --------------------------------------------------------------------------- gold selection


def responses(ann: pd.DataFrame) -> tuple[dict[str, int], set[str]]:
    """Per item, distinct annotators' submitted answers, and the items nobody is left to answer.

    ``ann``: rows ``item_id, annotator, status`` (``submitted`` or ``skipped``; others ignored).
    An item is *left to nobody* when every annotator the campaign has seen (answering or skipping
    anything) has answered or skipped it. Why both: a skip is not an answer, and Label Studio offers
    a skipped task to the others (its default ``skip_queue``), so with a larger team the item still
    gets its answer; but once every known annotator has answered or skipped it, nobody will, and
    waiting for it would hold the round for ever (a team of three, overlap three, one skip).
    """
    if ann.empty:
        return {}, set()
    rows = ann[ann["status"].isin(["submitted", "skipped"])].drop_duplicates(["item_id", "annotator", "status"])
    team = set(rows["annotator"])
    submitted = rows[rows["status"] == "submitted"].drop_duplicates(["item_id", "annotator"])
    counts = {str(k): int(v) for k, v in submitted.groupby("item_id").size().items()}
    seen_by = rows.drop_duplicates(["item_id", "annotator"]).groupby("item_id")["annotator"].nunique()
    skipped = set(rows.loc[rows["status"] == "skipped", "item_id"].astype(str))
    left_to_nobody = {str(i) for i, n in seen_by.items() if str(i) in skipped and n >= len(team)}
    return counts, left_to_nobody


def expired_requests(targets: Mapping[str, int], asked_in: Mapping[str, int], answers: Mapping[str, int],
                     round_no: int, wait_rounds: int) -> dict[str, int]:
    """Extra answers asked for ``wait_rounds`` rounds ago or earlier that have not come: item -> answers it has.

    Why: with people, an extra answer is a request, not a promise. A team no larger than the
    overlap has nobody left to give it, and a busy one may never get to it; an item waiting for it
    is neither trusted nor sent to adjudication, so without a deadline it waits for ever and the
    campaign stalls item by item. Past the deadline the item is decided on the answers it has
    (and, if still unsure, goes to adjudication), which is what a team lead would do by hand.
    """
    if wait_rounds < 1:
        raise ValueError("wait_rounds must be >= 1")
    out: dict[str, int] = {}
    for item, target in targets.items():
        have = int(answers.get(item, 0))
        asked = asked_in.get(item)
        if asked is not None and have < int(target) and round_no - int(asked) >= wait_rounds:
            out[str(item)] = have
    return out


def gold_count(gold_rate: float, batch_items: int) -> int:
    """Gold items to add to a batch of ``batch_items`` so they are ``gold_rate`` of what is pushed."""
    if gold_rate <= 0 or batch_items <= 0:
        return 0
    if gold_rate >= 1:
        raise ValueError("gold_rate must be below 1")
    return int(math.ceil(gold_rate * batch_items / (1.0 - gold_rate) - 1e-9))


def select_gold(candidates: Iterable[str], used: Iterable[str], n: int, seed: int = 0) -> list[str]:
    """``n`` unused gold items in a fixed pseudo-random order (stable across re-runs and machines)."""
    used = set(map(str, used))
    free = sorted((str(c) for c in candidates if str(c) not in used), key=lambda i: (stable_uniform(seed, "gold", i), i))
    return free[: max(0, n)]


# --------------------------------------------------------------------------- contract enforcement


def contract_offenders(frame: pd.DataFrame, *, known_items: Iterable[str], known_annotators: Iterable[str] | None,
                       labels: Sequence[str], now: datetime | None = None,
                       slack: timedelta = timedelta(minutes=5)) -> pd.Series:
    """Why each row breaks the annotations contract ("" when it does not), for enforcement.

    The Great Expectations run (``integrations.expectations.validate_annotations``)
    reports and documents the failures; this applies the same rules row by row
    so that exactly the offending rows are held back (GX lists only the first
    ids). A second live answer of one annotator to one item keeps the latest
    and holds back the earlier one.
    """
    reasons = pd.Series("", index=frame.index, dtype=object)
    if frame.empty:
        return reasons
    items = {str(i) for i in known_items}

    def mark(mask: pd.Series, why: str) -> None:
        mask = mask.fillna(True).astype(bool)
        reasons.loc[mask & (reasons == "")] = why

    mark(~frame["item_id"].astype(str).isin(items) | frame["item_id"].isna(), "unknown item")
    if known_annotators is not None:
        mark(~frame["annotator"].astype(str).isin({str(a) for a in known_annotators}), "unknown annotator")
    submitted = frame["status"] == "submitted" if "status" in frame.columns else pd.Series(True, index=frame.index)
    mark(submitted & ~frame["label"].isin(list(labels)), "label not in the label set")
    upper = (now or datetime.now(timezone.utc)).astimezone(timezone.utc) + slack
    earliest = pd.Timestamp("2000-01-01", tz="UTC")
    for col in ("created_at", "updated_at"):
        if col in frame.columns:
            ts = pd.to_datetime(frame[col], errors="coerce", utc=True, format="mixed")
            mark(ts.isna() | (ts < earliest) | (ts > pd.Timestamp(upper)), f"{col} missing or out of range")
    live = frame[submitted & (reasons == "")]
    when = next((c for c in ("updated_at", "created_at") if c in live.columns), None)
    order = live if when is None else live.assign(
        _t=pd.to_datetime(live[when], errors="coerce", utc=True, format="mixed")).sort_values("_t", kind="stable")
    dup = order.duplicated(subset=["item_id", "annotator"], keep="last")
    reasons.loc[dup[dup].index] = "superseded by a later answer of the same annotator"
    return reasons
