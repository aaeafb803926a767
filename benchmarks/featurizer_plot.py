"""One figure: the default policy's and random's mean learning curves per featuriser, per data set.

Why: issue 16 asks for the gain of active learning to be shown apart from the gain of a better
model. Within a panel, the vertical gap between featurisers is what the features buy; the gap
between a solid (default policy) and a dashed (random) line of one colour is what active
learning buys with those features.

    python benchmarks/featurizer_plot.py benchmarks/results_i16_*.json --out benchmarks/plots/featurizers_a.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from paired_aulc import split_key  # noqa: E402 - this folder is on sys.path when run as a script

COLOURS = {"tfidf": "tab:blue", "minilm": "tab:orange", "tfidf+minilm": "tab:green"}


def mean_curve(block: dict, arm: str) -> tuple[np.ndarray, np.ndarray] | None:
    curves = [t["arms"][arm] for t in block.get("trials", {}).values() if arm in t["arms"]]
    if not curves:
        return None
    n = min(len(c["labels"]) for c in curves)
    return np.asarray(curves[0]["labels"][:n]), np.mean([c["macro_f1"][:n] for c in curves], axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--protocol", default="a")
    ap.add_argument("--out", default="benchmarks/plots/featurizers_a.png")
    args = ap.parse_args()
    runs: dict = {}
    for f in args.results:
        runs.update(json.loads(Path(f).read_text(encoding="utf-8"))["runs"])
    by: dict[str, dict[str, dict]] = {}
    for key, block in runs.items():
        data, featurizer, protocol = split_key(key)
        if protocol == args.protocol:
            by.setdefault(data, {})[featurizer] = block
    datasets = sorted(by)
    cols = min(3, len(datasets))
    rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows + 0.8), squeeze=False)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, data in zip(axes.flat, datasets):
        for featurizer, colour in COLOURS.items():
            block = by[data].get(featurizer)
            if block is None:
                continue
            for arm, style in (("labelloop-margin", "-"), ("random", "--")):
                curve = mean_curve(block, arm)
                if curve is not None:
                    ax.plot(*curve, style, color=colour, lw=2 if style == "-" else 1.2,
                            label=f"{featurizer}: {'default policy' if arm != 'random' else 'random'}")
        ax.set_title(data)
        ax.set_xlabel("labels")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("test macro-F1 (mean over trials)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Features vs active learning, protocol ({args.protocol}): solid = labelloop's default policy, "
                 "dashed = random sampling, same model", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
