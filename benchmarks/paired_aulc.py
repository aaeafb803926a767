"""Paired AULC differences between two arms of ``al_benchmark.py`` results, with bootstrap intervals.

Why: issue 16's verdicts compare areas under the learning curve (an arm's vs random's, the adaptive
strategy's vs the default's); the two arms of one trial share the seed set and the test set, so the
difference per trial is the quantity to resample (2,000 resamples of whole trials, percentile interval).

    python benchmarks/paired_aulc.py results.json [more.json ...] --pairs labelloop-adaptive:labelloop-margin
    python benchmarks/paired_aulc.py *.json --pairs '' --across tfidf+minilm:tfidf,tfidf+minilm:minilm
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from labelloop.tasks.evaluate import area_under_curve, bootstrap_mean_interval  # noqa: E402


def paired(runs: dict, a: str, b: str) -> list[tuple[str, int, float, float, tuple | None]]:
    """Per (dataset, protocol): trials, mean AULC of ``a``, mean difference ``a - b``, 95 % interval."""
    out = []
    for key, block in sorted(runs.items()):
        diffs, aulcs = [], []
        for trial in block.get("trials", {}).values():
            arms = trial["arms"]
            if a in arms and b in arms:
                fa = area_under_curve(arms[a]["labels"], arms[a]["macro_f1"])
                fb = area_under_curve(arms[b]["labels"], arms[b]["macro_f1"])
                diffs.append(fa - fb)
                aulcs.append(fa)
        if diffs:
            out.append((key, len(diffs), float(np.mean(aulcs)), float(np.mean(diffs)), bootstrap_mean_interval(diffs)))
    return out


def split_key(key: str) -> tuple[str, str, str]:
    """``"trec+tfidf+minilm/a"`` -> ``("trec", "tfidf+minilm", "a")``; a bare data set is TF-IDF."""
    name, protocol = key.rsplit("/", 1)
    data, _, featurizer = name.partition("+")
    return data, featurizer or "tfidf", protocol


def across(runs: dict, arm: str, fa: str, fb: str) -> list[tuple[str, int, float, float, tuple | None]]:
    """``arm``'s AULC with featuriser ``fa`` minus with ``fb``, paired per trial: trials of one data set
    and protocol share the seed set and the test set whatever the features (al_benchmark draws them
    from the labels), so the difference isolates what the features buy the same policy."""
    by = {split_key(k): v for k, v in runs.items()}
    out = []
    for (data, featurizer, protocol), block in sorted(by.items()):
        other = by.get((data, fb, protocol))
        if featurizer != fa or other is None:
            continue
        diffs, aulcs = [], []
        for t, trial in block.get("trials", {}).items():
            mine, theirs = trial["arms"].get(arm), other.get("trials", {}).get(t, {}).get("arms", {}).get(arm)
            if mine and theirs:
                f1 = area_under_curve(mine["labels"], mine["macro_f1"])
                diffs.append(f1 - area_under_curve(theirs["labels"], theirs["macro_f1"]))
                aulcs.append(f1)
        if diffs:
            out.append((f"{data}/{protocol}", len(diffs), float(np.mean(aulcs)), float(np.mean(diffs)),
                        bootstrap_mean_interval(diffs)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--pairs", default="labelloop-adaptive:labelloop-margin,labelloop-adaptive:random,"
                                       "labelloop-margin:random")
    ap.add_argument("--across", default="", help="featuriser pairs for one arm, e.g. tfidf+minilm:tfidf,"
                                                 "tfidf+minilm:minilm (arm: --arm)")
    ap.add_argument("--arm", default="labelloop-margin", help="the arm --across compares")
    args = ap.parse_args()
    runs: dict = {}
    for f in args.results:
        runs.update(json.loads(Path(f).read_text(encoding="utf-8"))["runs"])
    print("| data / protocol | arm | vs | trials | AULC (arm) | difference | 95 % interval |")
    print("|---|---|---|---|---|---|---|")
    for pair in filter(None, args.pairs.split(",")):
        a, b = pair.split(":")
        for key, n, aulc, d, ci in paired(runs, a, b):
            iv = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "n/a"
            print(f"| {key} | {a} | {b} | {n} | {aulc:.4f} | {d:+.4f} | {iv} |")
    for pair in filter(None, args.across.split(",")):
        fa, fb = pair.split(":")
        for key, n, aulc, d, ci in across(runs, args.arm, fa, fb):
            iv = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "n/a"
            print(f"| {key} | {args.arm} ({fa}) | {args.arm} ({fb}) | {n} | {aulc:.4f} | {d:+.4f} | {iv} |")


if __name__ == "__main__":
    main()
