"""Held-out check of labelloop's default query policy, on data the benchmark does not report.

Why: issue 4 forbids tuning defaults to the benchmark datasets (AG News, TREC,
SMS spam, hurricane).  The default policy's knobs (cluster diversity over the
top 10x candidates, 10 % random share) are instead checked here, on two
shared datasets that RESULTS.md's tables never use: Banking77 (77 intents)
and MD-Agreement (offensive / not, the distributed majority label of 5
annotators, one row per item).  Variants: ``ll-cf3`` (diversity over the top
3x candidates), ``ll-nodiv`` (no diversity step), and the benchmark's
``labelloop-margin-pure`` (no diversity, no random share).

    python benchmarks/dev_check.py --featurizer minilm --out benchmarks/results_dev_minilm.json
    python benchmarks/dev_check.py --featurizer tfidf --datasets md_agreement --out benchmarks/results_dev_tfidf.json
    # small pools (2,000 rows): the cap on the diversity candidates (tasks.query.CANDIDATE_SHARE)
    python benchmarks/dev_check.py --featurizer minilm --max-pool 2000 \
        --arms labelloop-margin,ll-share25,ll-share50,labelloop-margin-pure,random \
        --out benchmarks/results_dev_smallpool_minilm.json

``ll-share25`` / ``ll-share50`` cap the diversity candidates at 25 % / 50 % of the
unlabelled rows; ``ll-nodiv`` and ``ll-cf3`` are described below.

Any other flag is passed to ``al_benchmark.main`` (protocols, seeds, report paths).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import pandas as pd  # noqa: E402

import al_benchmark as B  # noqa: E402

VARIANTS = "labelloop-margin,ll-cf3,ll-nodiv,labelloop-margin-pure,random"


def build_dev_dir(shared: Path, folder: Path) -> Path:
    """Item-level MD-Agreement (majority label, official test split) next to a link to Banking77."""
    ann = pd.read_csv(shared / "md_agreement_annotations.csv")
    items = ann.drop_duplicates("item_id")[["item_id", "text", "gold", "split"]]
    items = items.rename(columns={"item_id": "id", "gold": "label"})
    items["split"] = items["split"].map(lambda s: "test" if s == "test" else "train")
    items.to_csv(folder / "md_agreement.csv", index=False)
    (folder / "banking77.csv").symlink_to(shared / "banking77.csv")
    return folder


def main(argv: list[str]) -> int:
    B.DATASETS["md_agreement"] = B.DatasetSpec(
        "md_agreement", "md_agreement.csv", "MD-Agreement majority label, one row per item (held-out check only)")
    L = B.LabelloopArm
    B.ARMS["ll-cf3"] = ("labelloop default with diversity over the top 3x candidates (not 10x)",
                        lambda d, s: L(d, s, "margin", candidate_factor=3))
    B.ARMS["ll-share25"] = ("labelloop default with the diversity candidates capped at 25 % of the unlabelled pool",
                            lambda d, s: L(d, s, "margin", candidate_share=0.25))
    B.ARMS["ll-share50"] = ("labelloop default with the diversity candidates capped at 50 % of the unlabelled pool",
                            lambda d, s: L(d, s, "margin", candidate_share=0.5))
    B.ARMS["ll-nodiv"] = ("labelloop default without the diversity step", lambda d, s: L(d, s, "margin", diversity=False))
    shared = B.DEFAULT_DATA_DIR
    if not (shared / "md_agreement_annotations.csv").exists():
        print(f"error: {shared} has no md_agreement_annotations.csv (the shared datasets folder is needed)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="labelloop-dev-") as tmp:
        data_dir = build_dev_dir(shared, Path(tmp))
        args = ["--data-dir", str(data_dir), "--datasets", "banking77,md_agreement", "--arms", VARIANTS,
                "--report", str(Path(tmp) / "RESULTS.md"), "--plots", str(Path(tmp) / "plots")]
        return B.main(args + argv)  # later flags (e.g. --datasets, --out) win over these defaults


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
