"""Regenerate ``tests/data/ledger_v1/``: a campaign whose ledger labelloop wrote before Alembic (issue 15).

Why a committed file: the test that a campaign's existing ledger upgrades in place
(tests/unit/test_ledger_migrations.py) must open a ledger that *old* code wrote, not one the
new code creates. This script is how that file was made; it is kept so the fixture can be
read and rebuilt, but rebuilding it with today's code would produce a ledger at the newest
revision, which tests nothing. Run it only from a checkout of the commit named in
``ledger_v1/digests.json`` (``generated_from_commit``):

    git worktree add /tmp/old <commit> && cp tests/data/make_ledger_fixture.py /tmp/old/tests/data/
    cd /tmp/old && /path/to/.venv/bin/python tests/data/make_ledger_fixture.py   # writes /tmp/old/tests/data/ledger_v1

(the venv's editable install is found after the current folder, so the old commit's code runs).

The generating commit was main at 966919c ("Merge candidate: start from unlabelled text
(#14) and round overhead/progress (#18)"), the last commit whose ledger had no
``alembic_version`` table (``meta.schema_version`` = 1, tables grown by ``create_all``).

What it holds: a simulated-backend campaign ``fixture`` (300 generated tickets, two arms,
active and random), ``setup`` and three rounds, with gold items mixed into every batch, four
annotators of whom one answers at random (flagged and excluded: trust decisions), adaptive
redundancy (answer targets) and the simulated adjudicator's answers on items still unsure.
The folder keeps what a further round needs (config, data, gold file, the simulated backend's
task store, the featuriser fitted at setup) but not MLflow's store (a round starts a fresh one)
nor the per-round models. ``digests.json`` records the
row count and a digest of every table, so the migration test can prove nothing was lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FOLDER = HERE / "ledger_v1"  # the campaign folder, without MLflow's store, models and Prefect's state
OUT = FOLDER / "ledger.db"
META = FOLDER / "digests.json"
KEEP = ["campaign.toml", "gold.csv", "simulated_backend.json", "data/pool.csv", "models/featurizer.joblib"]

# Tables and the columns that identify a row: the digest is order-independent and ignores
# autoincrement ids only where they are surrogate keys.
TABLES = ["meta", "items", "rounds", "queries", "tasks", "annotations", "trust_items", "batch_decisions",
          "annotator_status", "adjudications", "gold_labels", "label_versions", "annotation_label_versions",
          "trust_rounds", "answer_targets"]


def table_digest(con: sqlite3.Connection, table: str, cols: list[str] | None = None) -> tuple[int, str]:
    """(row count, sha256 of the sorted rows over ``cols``, default all columns): equal before and after
    a migration when nothing changed (pass the old columns: a migration may add some)."""
    cols = cols or [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
    rows = sorted(repr(tuple(r)) for r in con.execute(f"SELECT {', '.join(cols)} FROM {table}"))
    return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from labelloop.tasks.demo_data import CLASSES, generate_demo_corpus, write_demo_files

    work = Path(tempfile.mkdtemp(prefix="labelloop-ledger-fixture-"))
    env = {**os.environ, "LABELLOOP_PREFECT_HOME": str(work / "prefect"), "LABELLOOP_PREFECT_PORT": str(_free_port()),
           "PREFECT_API_URL": "", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    try:
        files = write_demo_files(work / "data", n=300, seed=1)
        generate_demo_corpus(60, seed=7, id_prefix="gold").to_csv(work / "gold.csv", index=False)
        labels = ", ".join(f'"{c}"' for c in CLASSES)
        cfg = work / "campaign.toml"
        cfg.write_text(f'''
name = "fixture"
[data]
path = "data/{files['pool'].name}"
[labels]
names = [{labels}]
[splits]
test_size = 60
calibration_size = 40
seed_size = 20
min_test_labels = 10
min_calibration_labels = 10
[query]
strategy = "margin"
batch_size = 15
[budget]
max_labels = 80
[annotation]
backend = "simulated"
overlap = 3
max_overlap = 4
[annotation.simulated]
seed = 0
annotators = [
  {{ name = "ann-1", accuracy = 0.95 }},
  {{ name = "ann-2", accuracy = 0.9 }},
  {{ name = "ann-3", accuracy = 0.85 }},
  {{ name = "rand", accuracy = 0.2 }},
]
[trust]
gold_path = "gold.csv"
gold_rate = 0.3
min_gold_answers = 4
min_consensus_answers = 8
min_confidence = 0.9
''', encoding="utf-8")
        for args in (["setup", str(cfg)], ["round", str(cfg)], ["round", str(cfg)], ["round", str(cfg)]):
            r = subprocess.run([sys.executable, "-m", "labelloop.flows.cli", *args], cwd=ROOT, env=env, text=True,
                               capture_output=True, timeout=900)
            print(f"labelloop {args[0]}: exit {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
            if r.returncode != 0:
                raise SystemExit(f"labelloop {args[0]} failed")
        print("campaign folder:", sorted(f"{p.relative_to(work)} {p.stat().st_size}" for p in work.rglob("*")
                                         if p.is_file() and "prefect" not in p.parts and "mlartifacts" not in p.parts))
        shutil.rmtree(FOLDER, ignore_errors=True)
        for name in KEEP:
            (FOLDER / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / name, FOLDER / name)
        src = sqlite3.connect(work / "ledger.db")
        src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        src.execute("VACUUM INTO ?", (str(OUT),))
        src.close()
        con = sqlite3.connect(OUT)
        digests = {t: dict(zip(("rows", "sha256"), table_digest(con, t))) for t in TABLES}
        con.close()
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        META.write_text(json.dumps({"generated_from_commit": commit, "campaign": "fixture", "tables": digests},
                                   indent=2) + "\n", encoding="utf-8")
        print(f"wrote {FOLDER}: ledger {OUT.stat().st_size} bytes, {', '.join(KEEP)}, {META.name}")
    finally:
        subprocess.run([sys.executable, "-m", "labelloop.flows.cli", "server", "stop"], cwd=ROOT, env=env,
                       capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
