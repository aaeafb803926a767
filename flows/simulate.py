"""`labelloop simulate`: will active learning pay off on *this* data?

Runs the campaign loop (same splits, featuriser, model and query policy as a
real campaign) on any labelled file, with an oracle answering from the known
labels, for each strategy and a random arm at equal budget, over several
seeds. Writes ``results.json`` (learning curves per arm and seed, label
efficiency against random measured in the same run) and PNG curves.

Why an oracle rather than noisy annotators here: this answers the question
"does the selection help?" in isolation; annotator noise is the agreement
module's job and is simulated in the campaign flow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from labelloop.flows import logs
from labelloop.flows.logs import progress, say
from labelloop.flows.scoring import transform_with_progress
from labelloop.integrations.expectations import validate_pool
from labelloop.integrations.sources import InputError, load_table
from labelloop.tasks import calibrate, query
from labelloop.tasks.policy import (ArmState, Calibration, Policy, QueryPolicy, StopPolicy, arm_adaptive_weights,
                                    plan_round, random_ahead_fired, round_rng, stop_reason)
from labelloop.tasks.seed import carve_splits
from labelloop.tasks.evaluate import (
    area_under_curve,
    bootstrap_mean_interval,
    classification_metrics,
    cost_per_accuracy_point,
    label_efficiency,
    labels_to_reach,
    learning_curve_figure,
)
from labelloop.tasks.health import per_class_recall_check, random_ahead_check
from labelloop.tasks.train import (TrainingError, build_model, make_featurizer, predict_proba_aligned,
                                   resolve_featurizer, uses_minilm)



def run_arm(
    frame: pd.DataFrame,
    classes: list[str],
    vec: Any,
    X_all: Any,
    strategy: str,
    *,
    seed: int,
    budget: int,
    batch_size: int,
    random_share: float,
    C: float = 10.0,
    progress: bool = False,
    random_curve: dict[str, Any] | None = None,
    random_ahead_share: float = 0.5,
    class_quota: float = 0.0,
    near_duplicate_threshold: float | None = 0.95,
    calibration_ece: float = 0.10,
    max_rounds: int = 50,
) -> dict[str, Any]:
    """One arm, one seed: the seed batch, then a campaign's rounds with an oracle until the arm stops.

    Each round plans the arm's batch with the campaign's policy (:func:`tasks.policy.plan_round`:
    random share, the calibration gate's fallback when the frame has a ``calibration`` split,
    the stop rules) and selects it with :func:`tasks.query.select_round_batch` on the campaign's
    random stream (:func:`tasks.policy.round_rng` with ``seed`` as ``[splits] random_state``),
    over the pool in the campaign's order (by item id): a campaign on the same data with a
    perfect annotator queries the same items in every round. With ``random_curve`` (the random
    arm's curve of the same seed) the arm runs the campaigns' random-ahead guard as a round
    does: the check of round r, once both arms are evaluated (both curves up to r), raises the
    share of round r + 1; ``guard_rounds`` counts those batches. The ``adaptive`` strategy's
    weights come from this arm's curve with its random shares and random's curve up to r - 1,
    as a campaign's round reads them from its ledger; ``random_share`` and ``adaptive_weights``
    record them per batch. With ``progress`` each round appends
    ``labels:macro-F1`` to the current stdout line.
    """
    arm = "random" if strategy == "random" else "active"
    policy = Policy(query=QueryPolicy(strategy=strategy, batch_size=batch_size, random_share=random_share,
                                      random_ahead_share=random_ahead_share, class_quota=class_quota,
                                      near_duplicate_threshold=near_duplicate_threshold,
                                      random_arm=random_curve is not None),
                    stop=StopPolicy(max_labels=budget, max_rounds=max_rounds), calibration_ece=calibration_ece)
    order = frame["id"].astype(str) if "id" in frame else pd.Series(frame.index, index=frame.index).astype(str)
    pos = {i: k for k, i in enumerate(frame.index)}
    test = frame[frame["split"] == "test"]
    X_test = X_all[[pos[i] for i in test.index]]
    cal = frame.loc[order[frame["split"] == "calibration"].sort_values().index]  # the campaign's item order
    X_cal = X_all[[pos[i] for i in cal.index]]
    y_cal = np.array([classes.index(str(y)) for y in cal["label"]], dtype=int)
    labelled = list(frame.index[frame["split"] == "seed"])
    pool = list(order[frame["split"] == "pool"].sort_values(kind="stable").index)
    curve: dict[str, Any] = {"labels": [], "macro_f1": [], "accuracy": [], "seconds": [],
                             "recall": {c: [] for c in classes}}
    if random_curve is not None:
        curve["guard_rounds"] = 0
    random_pts = list(zip(random_curve["labels"], random_curve["macro_f1"])) if random_curve is not None else None
    fired_before = False
    round_no = 0
    while True:
        round_no += 1
        t0 = time.perf_counter()
        y_lab = frame.loc[labelled, "label"].tolist()
        model = fit_on_features(vec, X_all[[pos[i] for i in labelled]], y_lab, C=C, random_state=seed)
        p_test = predict_proba_aligned(model, X_test, classes, features=True)
        m = classification_metrics(test["label"].tolist(), p_test, classes)
        curve["labels"].append(len(labelled))
        curve["macro_f1"].append(round(m["macro_f1"], 5))
        curve["accuracy"].append(round(m["accuracy"], 5))
        for c in classes:
            curve["recall"][c].append(round(m[f"recall_{c}"], 5))
        if progress:
            say(f" {len(labelled)}:{m['macro_f1']:.3f}", end="")
        gate = None
        if len(cal):
            p_cal = predict_proba_aligned(model, X_cal, classes, features=True)
            report = calibrate.calibration_report(p_cal, y_cal, method="temperature", gate=calibration_ece)
            gate = Calibration(judged=True, passed=report.gate_passed, ece_after=report.ece_after)
        shares = curve.get("random_share", [])
        hist = [(n, f, shares[k] if k < len(shares) else float("nan"))
                for k, (n, f) in enumerate(zip(curve["labels"], curve["macro_f1"]))]
        weights = arm_adaptive_weights(policy.query, hist, random_pts[:round_no - 1] if random_pts else None)
        state = ArmState(arm=arm, round_no=round_no, spent=len(labelled), calibration=gate,
                         random_ahead_fired=fired_before, adaptive=weights)
        history = [{"labels": n, "macro_f1": f} for n, f in zip(curve["labels"], curve["macro_f1"])]
        plan = plan_round(policy, state, stopped=stop_reason(policy.stop, round_no, len(labelled), history,
                                                             judged=True))
        if random_pts is not None:  # this round's check once both arms are evaluated, as a campaign records it
            fired_before = random_ahead_fired(list(zip(curve["labels"], curve["macro_f1"])), random_pts[:round_no])
        n = min(plan.batch_size, len(pool)) if plan.queries else 0
        if n <= 0:
            curve["seconds"].append(round(time.perf_counter() - t0, 4))
            break
        if random_curve is not None and plan.random_share > random_share and state.random_ahead_fired:
            curve["guard_rounds"] += 1
        curve.setdefault("random_share", []).append(round(plan.random_share, 4))
        if plan.adaptive is not None:
            curve.setdefault("adaptive_weights", []).append(dict(plan.adaptive.weights))
        X_pool = X_all[[pos[i] for i in pool]]
        picks = query.select_round_batch(
            plan.strategy, n, round_rng(seed, round_no, arm),
            proba=predict_proba_aligned(model, X_pool, classes, features=True), X_pool=X_pool,
            X_labelled=X_all[[pos[i] for i in labelled]], y_labelled=np.asarray(y_lab),
            estimator=model.named_steps["clf"], classes=classes, random_share=plan.random_share,
            class_quota=class_quota, near_duplicate_threshold=near_duplicate_threshold)
        chosen = [pool[p.index] for p in picks]
        curve.setdefault("queried", []).append([str(order[i]) for i in chosen])
        labelled.extend(chosen)
        taken = set(chosen)
        pool = [i for i in pool if i not in taken]
        curve["seconds"].append(round(time.perf_counter() - t0, 4))
    return curve


def fit_on_features(vec: Any, X_lab: Any, y_lab: Sequence[str], *, C: float, random_state: int) -> Any:
    """labelloop's model (``tasks.train.build_model``) with its classifier fitted on precomputed features.

    Identical to ``train_model`` on the texts (the featuriser is frozen), but
    the features are computed once per seed instead of once per round, which
    matters for sentence embeddings.  Use with ``predict_proba_aligned(...,
    features=True)``.
    """
    distinct = sorted(set(y_lab))
    if len(distinct) < 2:
        raise TrainingError(f"need labels of at least 2 classes to train, got {len(y_lab)} labels of {distinct}")
    model = build_model(vec, C=C, random_state=random_state)
    model.named_steps["clf"].fit(X_lab, list(y_lab))
    return model


def full_data_score(frame: pd.DataFrame, classes: list[str], vec: Any, X_all: Any, seed: int, C: float) -> float:
    """Macro-F1 of the model trained on every non-test row: the ceiling the target is a share of."""
    pos = {i: k for k, i in enumerate(frame.index)}
    train = frame[frame["split"].isin(["pool", "seed"])]
    test = frame[frame["split"] == "test"]
    model = fit_on_features(vec, X_all[[pos[i] for i in train.index]], train["label"].tolist(), C=C,
                            random_state=seed)
    p = predict_proba_aligned(model, X_all[[pos[i] for i in test.index]], classes, features=True)
    return classification_metrics(test["label"].tolist(), p, classes)["macro_f1"]


@task(cache_policy=NO_CACHE)
def simulate_seed(frame: pd.DataFrame, classes: list[str], strategies: Sequence[str], seed: int, budget: int,
                  batch_size: int, seed_size: int, test_size: int, random_share: float, C: float,
                  featurizer: str = "auto", random_ahead_share: float = 0.5,
                  on_arm: Callable[[], Any] | None = None, *, calibration_size: int = 0, class_quota: float = 0.0,
                  near_duplicate_threshold: float | None = 0.95, calibration_ece: float = 0.10,
                  max_rounds: int = 50) -> dict:
    """One seed's split and every arm's curve on it (``on_arm`` is called as each arm finishes).

    The split is a campaign's with ``[splits] random_state = seed`` (stratified seed); with
    ``calibration_size`` > 0 the calibration slice is carved too and the active arms run the
    calibration gate on it (:func:`tasks.policy.plan_round`), else there is no gate.
    """
    f = frame.copy()
    f["split"] = carve_splits(f, test_size=test_size, calibration_size=calibration_size, seed_size=seed_size,
                              seed_method="stratified", random_state=seed)
    train_side = f[f["split"].isin(["pool", "seed"])]
    vec = make_featurizer(featurizer, train_side["text"].tolist(), reporter=logs)  # as set-up fits the campaign's
    X_all = transform_with_progress(vec, f["text"].tolist(), "featurising the texts")
    out = {"full_data_macro_f1": round(full_data_score(f, classes, vec, X_all, seed, C), 5), "arms": {}}
    # random first: the other arms run the campaigns' random-ahead guard against its curve
    for s in sorted(strategies, key=lambda x: x != "random"):
        t0 = time.perf_counter()
        say(f"  seed {seed} {s:<16} labels:macro-F1", end="")
        out["arms"][s] = run_arm(f, classes, vec, X_all, s, seed=seed, budget=budget, batch_size=batch_size,
                                 random_share=random_share, C=C, progress=True,
                                 random_curve=out["arms"].get("random") if s != "random" else None,
                                 random_ahead_share=random_ahead_share, class_quota=class_quota,
                                 near_duplicate_threshold=near_duplicate_threshold, calibration_ece=calibration_ece,
                                 max_rounds=max_rounds)
        last = out["arms"][s]
        guard = f", random-ahead guard in {last['guard_rounds']} batch(es)" if last.get("guard_rounds") else ""
        if last.get("adaptive_weights"):  # the adaptive strategy says where its weight went
            guard += ", adaptive weights at the last batch: " + ", ".join(
                f"{k} {v:.2f}" for k, v in last["adaptive_weights"][-1].items())
        say(f"  | {len(last['labels'])} rounds, {time.perf_counter() - t0:.1f}s{guard}")
        if on_arm is not None:
            on_arm()
    out["arms"] = {s: out["arms"][s] for s in strategies}  # the caller's order
    return out


def load_simulation_data(data: str, *, text_col: str = "text", label_col: str = "label", id_col: str | None = None,
                         encoding: str = "utf-8", delimiter: str | None = None) -> pd.DataFrame:
    """Read and check the labelled file before anything starts: the rows a simulation uses.

    Why before the flow: a bad file must give one line naming the file and row, without
    starting Prefect or writing ``--out``. Identical texts are kept once (they would leak
    between test and training); blank texts and missing ids are errors (the pool contract).
    """
    frame = load_table(data, id_col=id_col, text_col=text_col, label_col=label_col, encoding=encoding,
                       delimiter=delimiter)
    unique = frame.drop_duplicates("id") if id_col is None else frame
    validate_pool(unique, label_set=None, max_text_length=1_000_000, source=str(data))
    with_label = frame[frame["label"].notna()]
    labelled = with_label.drop_duplicates("text").reset_index(drop=True)
    labelled.attrs["left_out"] = {"without a label": int(len(frame) - len(with_label)),
                                  "repeating an earlier text": int(len(with_label) - len(labelled))}
    classes = sorted(labelled["label"].astype(str).unique().tolist())
    if len(classes) < 2:
        raise InputError(f"{data}: column {label_col!r} (label_col) has {len(labelled)} labelled rows of "
                         f"{len(classes)} class(es) {classes}; a simulation needs labels of at least 2 classes",
                         path=str(data), field=label_col)
    _prepared[str(data)] = labelled
    return labelled


_prepared: dict[str, pd.DataFrame] = {}  # checked by load_simulation_data in this process, used by the flow


def simulate_flow(data: str, out: str, *, encoding: str = "utf-8", delimiter: str | None = None,
                  **kwargs: Any) -> dict:
    """`labelloop simulate`: check the file (:func:`load_simulation_data`), then run the Prefect flow."""
    featurizer, _ = resolve_featurizer(kwargs.get("featurizer", "auto"))  # raises on an unknown name
    kwargs["featurizer"] = featurizer  # resolved once: the flow's parameters say which features ran
    if uses_minilm(featurizer):
        from labelloop.tasks.embeddings import require_minilm

        require_minilm()  # fail before any work when the optional extra is missing
    load_simulation_data(data, text_col=kwargs.get("text_col", "text"), label_col=kwargs.get("label_col", "label"),
                         id_col=kwargs.get("id_col"), encoding=encoding, delimiter=delimiter)
    return simulate_data_flow(data, out, **kwargs)


@flow(name="labelloop-simulate")
def simulate_data_flow(
    data: str,
    out: str,
    text_col: str = "text",
    label_col: str = "label",
    id_col: str | None = None,
    strategies: Sequence[str] = ("margin",),
    budget: int = 500,
    batch_size: int = 25,
    seeds: int = 3,
    seed_size: int | None = None,
    test_size: int | None = None,
    random_share: float = 0.1,
    random_ahead_share: float = 0.5,
    target: float = 0.95,
    C: float = 10.0,
    featurizer: str = "auto",
    cost_per_label: float = 1.0,
    class_quota: float = 0.0,
    near_duplicate_threshold: float = 0.95,
    calibration_size: int = 0,
    calibration_ece: float = 0.10,
    max_rounds: int = 50,
    random_state: int = 0,
) -> dict:
    """Simulate ``strategies`` and a random arm under a campaign's policy (``[query]``, ``[budget]``
    max_rounds, ``[gates] calibration_ece``), seeds ``random_state`` .. ``random_state + seeds - 1``."""
    if cost_per_label < 0:
        raise ValueError(f"cost_per_label must be >= 0, got {cost_per_label}")
    featurizer, _ = resolve_featurizer(featurizer)  # auto: as a campaign's set-up chooses
    if uses_minilm(featurizer):
        from labelloop.tasks.embeddings import require_minilm

        require_minilm()  # fail before any work when the optional extra is missing
    frame = _prepared.pop(str(data), None)
    if frame is None:
        frame = load_simulation_data(data, text_col=text_col, label_col=label_col, id_col=id_col)
        _prepared.pop(str(data), None)
    classes = sorted(frame["label"].astype(str).unique().tolist())
    strategies = list(dict.fromkeys([*strategies, "random"]))
    seed_size = seed_size or max(batch_size, len(classes))
    test_size = test_size or int(min(2000, max(len(classes) * 5, round(0.2 * len(frame)))))
    left_out = ", ".join(f"{n} {why}" for why, n in frame.attrs.get("left_out", {}).items() if n)
    say(f"simulate: {len(frame)} labelled rows{f' ({left_out} left out)' if left_out else ''}, {len(classes)} classes, "
        f"test {test_size}, seed {seed_size}, budget {budget}, batch {batch_size}, strategies {strategies}, "
        f"featurizer {featurizer}, {seeds} seed(s)")
    per_seed = {}
    with progress("simulating", seeds * len(strategies), "arms") as bar:
        for sd in range(random_state, random_state + seeds):
            per_seed[sd] = simulate_seed(frame, classes, strategies, sd, budget, batch_size, seed_size, test_size,
                                         random_share, C, featurizer, random_ahead_share, on_arm=bar.advance,
                                         calibration_size=calibration_size, class_quota=class_quota,
                                         near_duplicate_threshold=near_duplicate_threshold,
                                         calibration_ece=calibration_ece, max_rounds=max_rounds)
    result = summarise(per_seed, strategies, target=target, cost_per_label=cost_per_label)
    result.update({"cost_per_label": cost_per_label,
                   "data": str(Path(data).resolve()), "n_rows": int(len(frame)), "classes": classes,
                   "budget": budget, "batch_size": batch_size, "seed_size": seed_size, "test_size": test_size,
                   "random_share": random_share, "random_ahead_share": random_ahead_share, "target": target,
                   "class_quota": class_quota, "near_duplicate_threshold": near_duplicate_threshold,
                   "calibration_size": calibration_size, "calibration_ece": calibration_ece, "max_rounds": max_rounds,
                   "random_state": random_state,
                   "n_seeds": seeds, "featurizer": featurizer, "C": C})
    write_outputs(result, Path(out))
    return result


def summarise(per_seed: dict[int, dict], strategies: Sequence[str], target: float, cost_per_label: float = 1.0
              ) -> dict:
    """Per arm: curves per seed, label efficiency vs random at ``target`` × full-data macro-F1, AULC,
    and cost per test-accuracy point gained over the seed model (``cost_per_label`` per label)."""
    arms: dict[str, Any] = {}
    for s in strategies:
        seeds = {str(sd): {k: v for k, v in r["arms"][s].items()} for sd, r in per_seed.items()}
        eff, aulc, secs, cpp = [], [], [], []
        for sd, r in per_seed.items():
            goal = target * r["full_data_macro_f1"]
            c = r["arms"][s]
            rnd = r["arms"]["random"]
            eff.append(label_efficiency(rnd["labels"], rnd["macro_f1"], c["labels"], c["macro_f1"], goal))
            aulc.append(area_under_curve(c["labels"], c["macro_f1"]))
            secs.append(float(np.median(c["seconds"])))
            cpp.append(cost_per_accuracy_point(c["labels"], c["accuracy"], cost_per_label))
            seeds[str(sd)]["labels_to_target"] = labels_to_reach(c["labels"], c["macro_f1"], goal)
        finite = [e for e in eff if e is not None and np.isfinite(e)]
        priced = [x for x in cpp if x is not None]
        mean_f1 = _mean_curve([per_seed[sd]["arms"][s] for sd in per_seed], "macro_f1")
        recall_hist = _mean_recall_history([per_seed[sd]["arms"][s] for sd in per_seed])
        health = {"per_class_recall": per_class_recall_check(recall_hist).to_dict()}
        if s != "random":
            health["random_ahead"] = random_ahead_check(
                mean_f1, _mean_curve([per_seed[sd]["arms"]["random"] for sd in per_seed], "macro_f1")).to_dict()
        arms[s] = {
            "seeds": seeds,
            "label_efficiency": float(np.mean(finite)) if finite else None,
            "label_efficiency_per_seed": eff,
            "label_efficiency_ci95": bootstrap_mean_interval(finite),
            "aulc": float(np.mean(aulc)),
            "seconds_per_round": float(np.median(secs)),
            "cost_per_accuracy_point": float(np.mean(priced)) if priced else None,
            "cost_per_accuracy_point_per_seed": cpp,
            "final_macro_f1_mean": float(np.mean([per_seed[sd]["arms"][s]["macro_f1"][-1] for sd in per_seed])),
            "final_recall_mean": recall_hist[-1] if recall_hist else {},
            "health": health,
        }
    return {"arms": arms, "full_data_macro_f1": {str(sd): r["full_data_macro_f1"] for sd, r in per_seed.items()}}


def _mean_curve(curves: Sequence[dict], key: str) -> list[tuple[int, float]]:
    """Mean over seeds at each label count (seeds share seed size and batch, so their label grids agree)."""
    pts: dict[int, list[float]] = {}
    for c in curves:
        for n, f in zip(c["labels"], c[key]):
            pts.setdefault(int(n), []).append(float(f))
    return [(n, float(np.mean(v))) for n, v in sorted(pts.items())]


def _mean_recall_history(curves: Sequence[dict]) -> list[dict[str, float]]:
    """Per round ``{class: recall}`` averaged over seeds (rounds all seeds reached)."""
    if not curves or "recall" not in curves[0]:
        return []
    n = min(len(c["labels"]) for c in curves)
    classes = list(curves[0]["recall"])
    return [{k: float(np.mean([c["recall"][k][i] for c in curves])) for k in classes} for i in range(n)]


def write_outputs(result: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float), encoding="utf-8")
    curves = {s: _mean_curve(list(arm["seeds"].values()), "macro_f1") for s, arm in result["arms"].items()}
    fig = learning_curve_figure(curves, title=f"{Path(result['data']).name}: mean over {result['n_seeds']} seed(s)")
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)
    fig = recall_figure(result)
    fig.savefig(out / "per_class_recall.png", dpi=100)
    plt.close(fig)
    lines = [f"{'arm':<18}{'label-eff.':>11}{'95% CI':>13}{'AULC':>8}{'final F1':>10}{'cost/acc.pt':>12}{'s/round':>9}"]
    for s, arm in result["arms"].items():
        eff = arm["label_efficiency"]
        cpp = arm.get("cost_per_accuracy_point")
        ci = arm.get("label_efficiency_ci95")
        lines.append(f"{s:<18}{'n/a' if eff is None else f'{eff:.2f}x':>11}"
                     f"{'n/a' if ci is None else f'{ci[0]:.2f}-{ci[1]:.2f}':>13}{arm['aulc']:>8.3f}"
                     f"{arm['final_macro_f1_mean']:>10.3f}{'n/a' if cpp is None else f'{cpp:.2f}':>12}"
                     f"{arm['seconds_per_round']:>9.3f}")
    say("\n".join(lines))
    for s, arm in result["arms"].items():
        per_seed = arm.get("label_efficiency_per_seed") or []
        measured = [e for e in per_seed if e is not None and np.isfinite(e)]
        if s != "random" and len(measured) < len(per_seed):  # a mean over fewer seeds than the table suggests
            say(f"label-eff. of {s}: {len(measured)} of {len(per_seed)} seed(s) reached "
                f"{result.get('target', 0.95):.0%} of the full-data macro-F1 (this arm and random) within the "
                f"budget; the mean is over {'those' if measured else 'none'}")
        for chk in arm.get("health", {}).values():
            if chk["fired"]:
                say(f"health [{s}] {chk['name']}: {chk['message']}")
    say(f"wrote {out / 'results.json'}, {out / 'learning_curves.png'} and {out / 'per_class_recall.png'}")


def recall_figure(result: dict) -> Any:
    """One panel per arm: per-class recall on the frozen test set vs labels (mean over seeds)."""
    import matplotlib.pyplot as plt

    arms = list(result["arms"])
    cols = min(3, len(arms))
    rows = int(np.ceil(len(arms) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    classes = result.get("classes", [])
    for ax, s in zip(axes.ravel(), arms):
        seeds = list(result["arms"][s]["seeds"].values())
        hist = _mean_recall_history(seeds)
        labels = seeds[0]["labels"][: len(hist)] if seeds else []
        for c in classes if len(classes) <= 12 else []:
            ax.plot(labels, [h[c] for h in hist], label=str(c), lw=1.2)
        if len(classes) > 12 and hist:  # too many lines: min / mean / max over classes
            vals = np.array([[h[c] for c in classes] for h in hist])
            ax.plot(labels, vals.min(axis=1), label="min class")
            ax.plot(labels, vals.mean(axis=1), label="mean")
            ax.plot(labels, vals.max(axis=1), label="max class")
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("labels")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(arms):]:
        ax.axis("off")
    axes[0][0].set_ylabel("test recall")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("per-class recall (mean over seeds)", fontsize=10)
    fig.tight_layout()
    return fig
