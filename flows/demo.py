"""`labelloop demo`: a whole campaign on generated data, active vs random, in minutes.

Why generated data: the demo must run on a fresh clone with nothing to
download, and a generator lets us put in what makes active learning
interesting (imbalance, ambiguity, label noise, near-duplicates).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flows.config import example_config

MARKER = ".labelloop-demo"


def prepare_demo(folder: Path, *, n: int, budget: int, batch_size: int, backend: str, seed: int = 0,
                 ls_url: str | None = None) -> Path:
    """Write demo data and a campaign config into ``folder`` (wiping an earlier demo there)."""
    from tasks.demo_data import CLASSES, write_demo_files

    folder = folder.resolve()
    if folder.exists() and (folder / MARKER).exists():
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not a labelloop demo folder; pick another --dir")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("created by `labelloop demo`; safe to delete\n")
    files = write_demo_files(folder / "data", n=n, seed=seed)
    text = example_config(name="demo", labels=list(CLASSES))
    text = text.replace('path = "pool.csv"', f'path = "{Path("data") / files["pool"].name}"')
    text = text.replace("max_labels = 500 ", f"max_labels = {budget} ")
    text = text.replace("batch_size = 50\n", f"batch_size = {batch_size}\n")
    text = text.replace("seed_size = 50 ", f"seed_size = {batch_size} ")
    text = text.replace('backend = "simulated" ', f'backend = "{backend}" ')
    if backend == "label_studio":
        text = text.replace("simulate_annotators = false", "simulate_annotators = true")
        if ls_url:
            text = text.replace('url = "http://127.0.0.1:8089"', f'url = "{ls_url}"')
    cfg = folder / "campaign.toml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def results_table(summaries_by_arm: dict[str, list[tuple[int, float]]]) -> str:
    """Labels vs macro-F1, one column per arm, rows aligned on the round."""
    arms = list(summaries_by_arm)
    rows = max((len(v) for v in summaries_by_arm.values()), default=0)
    head = f"{'round':>5} " + " ".join(f"{a + ' labels':>14} {a + ' F1':>10}" for a in arms)
    lines = [head, "-" * len(head)]
    for i in range(rows):
        cells = []
        for a in arms:
            pts = sorted(summaries_by_arm[a])
            if i < len(pts):
                cells.append(f"{pts[i][0]:>14d} {pts[i][1]:>10.3f}")
            else:
                cells.append(f"{'':>14} {'':>10}")
        lines.append(f"{i + 1:>5} " + " ".join(cells))
    return "\n".join(lines)
