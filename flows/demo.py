"""`labelloop demo`: a whole campaign on generated data, active vs random, in minutes.

Why generated data: the demo must run on a fresh clone with nothing to
download, and a generator lets us put in what makes active learning
interesting (imbalance, ambiguity, label noise, near-duplicates).
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from labelloop.flows.config import example_config
from labelloop.tasks.errors import LabelloopError

MARKER = ".labelloop-demo"


def prepare_demo(folder: Path, *, n: int, budget: int, batch_size: int, backend: str, seed: int = 0,
                 ls_url: str | None = None, unlabelled: bool = False) -> Path:
    """Write demo data and a campaign config into ``folder`` (wiping an earlier demo there).

    ``unlabelled``: the pool has no label column at all, as a real corpus arrives; the labels live
    only in people's answers (``data/answers.csv``, three simulated people answering from the
    generator's hidden truth, replayed by the replay backend), so set-up pushes the test set and
    the calibration slice with the seed and every round reports how many test items it stands on.
    """
    from labelloop.tasks.demo_data import CLASSES, write_demo_files

    sizes = demo_splits(n, budget=budget, batch_size=batch_size)  # before anything is written
    folder = folder.resolve()
    if folder.exists() and (folder / MARKER).exists():
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not a labelloop demo folder; pick another --dir")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("created by `labelloop demo`; safe to delete\n")
    files = write_demo_files(folder / "data", n=n, seed=seed)
    values: dict[str, object] = {"data.path": str(Path("data") / files["pool"].name), "budget.max_labels": budget,
                                 "query.batch_size": batch_size, "splits.seed_size": batch_size,
                                 "annotation.backend": backend, **sizes}
    if backend == "label_studio":
        values["annotation.label_studio.simulate_annotators"] = True
        # a demo run is a new campaign: its own project, never the tasks and answers of an earlier demo
        # that the local Label Studio still holds (set-up refuses a new campaign in a used project)
        values["annotation.label_studio.project_title"] = f"labelloop demo {datetime.now():%Y-%m-%d %H:%M:%S}"
        if ls_url:
            values["annotation.label_studio.url"] = ls_url
    if unlabelled:
        values.update(_unlabelled(folder, files["pool"], n=n, seed=seed))
    text = example_config(name="demo", labels=list(CLASSES), values=values)
    cfg = folder / "campaign.toml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def demo_splits(n: int, *, budget: int, batch_size: int) -> dict[str, object]:
    """The labelled demo's test set and calibration slice for ``n`` texts: the template's 500 / 300 from
    3,000 texts up, a fifth and a tenth of a smaller corpus, so ``--n`` alone makes a smaller demo.
    Raises ``DemoSizeError`` (exit 2) when the rest cannot hold each arm's budget."""
    test, cal = min(500, n // 5), min(300, n // 10)
    if n < 100 or batch_size < 1 or budget <= batch_size or n - test - cal < budget:
        raise DemoSizeError(f"--n {n} texts cannot hold a test set ({test}), a calibration slice ({cal}) and a budget "
                            f"of {budget} labels per arm in batches of {batch_size} (the seed is one batch): use "
                            f"--n {max(100, (budget + 1) * 10 // 7 + 1)} or more, or a smaller --budget; --budget must "
                            f"be above --batch-size")
    return {"splits.test_size": test, "splits.calibration_size": cal,
            "splits.min_test_labels": min(100, test), "splits.min_calibration_labels": min(50, cal)}


class DemoSizeError(LabelloopError, ValueError):
    """``labelloop demo`` sizes that cannot make a campaign."""


DEMO_PEOPLE = (("ann-1", 0.95), ("ann-2", 0.9), ("ann-3", 0.85))


def _unlabelled(folder: Path, pool_path: Path, *, n: int, seed: int) -> dict[str, object]:
    """Strip the pool's labels into people's answers; returns the config values that point the campaign
    at them (replay backend)."""
    import pandas as pd

    from labelloop.tasks.annotate import simulated_answer

    pool = pd.read_csv(pool_path, dtype=str, keep_default_na=False)
    labels = sorted(set(pool["label"]))
    answers = pd.DataFrame([{"item_id": i, "annotator_id": who, "label": simulated_answer(i, who, acc, y, labels, seed)}
                            for i, y in zip(pool["id"], pool["label"]) for who, acc in DEMO_PEOPLE])
    pool.drop(columns=["label"]).to_csv(pool_path, index=False)
    answers.to_csv(folder / "data" / "answers.csv", index=False)
    test, cal = max(60, n // 10), max(40, n // 20)  # people label them too: keep the evaluation budget modest
    return {"splits.test_size": test, "splits.calibration_size": cal, "splits.min_calibration_labels": min(50, cal),
            "annotation.backend": "replay", "annotation.replay.path": "data/answers.csv"}


def results_table(summaries_by_arm: dict[str, list[tuple]]) -> str:
    """Labels vs macro-F1, one column per arm, rows aligned on the round; points with an interval
    (``(labels, f1, low, high)``, :func:`flows.round.learning_curves` ``with_ci``) show it."""
    arms = list(summaries_by_arm)
    rows = max((len(v) for v in summaries_by_arm.values()), default=0)
    banded = any(len(p) >= 4 and p[2] == p[2] for v in summaries_by_arm.values() for p in v)
    w = 26 if banded else 10
    head = f"{'round':>5} " + " ".join(f"{a + ' labels':>14} {a + (' F1 [95% CI]' if banded else ' F1'):>{w}}"
                                       for a in arms)
    lines = [head, "-" * len(head)]
    for i in range(rows):
        cells = []
        for a in arms:
            pts = sorted(summaries_by_arm[a])
            if i < len(pts):
                p = pts[i]
                f1 = f"{p[1]:.3f}" + (f" [{p[2]:.3f}, {p[3]:.3f}]" if len(p) >= 4 and p[2] == p[2] else "")
                cells.append(f"{p[0]:>14d} {f1:>{w}}")
            else:
                cells.append(f"{'':>14} {'':>{w}}")
        lines.append(f"{i + 1:>5} " + " ".join(cells))
    return "\n".join(lines)
