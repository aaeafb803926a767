"""How long `labelloop` commands take, next to the model work they wrap (issue 18).

One run measures, on a generated 10,000-text campaign with the simulated backend:

* the median of ``--runs`` runs (default 5) of each command, as a user runs it (the
  installed entry point in a fresh process): ``--help``, ``status``, ``setup`` failing on
  its config / a missing file / a missing column / the data contract, and ``round``;
* a round in a warm process (``round_flow`` called again in a Python process that already
  ran one: what a long-lived worker pays);
* the bare model work of one round (both arms: fit, score the pool, evaluate on the test
  and calibration sets), without Prefect, the ledger or MLflow;
* the import time of great_expectations, mlflow, prefect and scikit-learn (``python -c
  "import X"`` minus ``python -c "pass"``), in the same run, so the targets are judged
  against this machine's load at the time.

Commands that orchestrate reach Prefect through the shared local server
(flows/prefect_server.py), started once here in a temporary folder (its first start is
reported, not counted in the per-round medians) and stopped at the end.

    python benchmarks/cli_latency.py --write-results     # writes the table into benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- cli_latency:start -->", "<!-- cli_latency:end -->"
LIBS = {"great_expectations": "great_expectations", "mlflow": "mlflow", "prefect": "prefect", "scikit-learn": "sklearn"}


def timed(cmd: list[str], env: dict, expect: int | None = 0) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if expect is not None and res.returncode != expect:
        raise SystemExit(f"{' '.join(cmd[2:])}: exit {res.returncode} (expected {expect})\n{res.stderr[-2000:]}")
    return dt


def median_of(runs: int, fn) -> tuple[float, list[float]]:
    xs = [fn() for _ in range(runs)]
    return statistics.median(xs), xs


def import_times(runs: int, env: dict) -> dict[str, float]:
    base, _ = median_of(runs, lambda: timed([sys.executable, "-c", "pass"], env))
    out = {}
    for name, mod in LIBS.items():
        med, _ = median_of(runs, lambda m=mod: timed([sys.executable, "-c", f"import {m}"], env))
        out[name] = max(0.0, med - base)
    return out


BARE = r'''
import json, sys, time
sys.path.insert(0, sys.argv[2])
from flows.runtime import open_campaign
from tasks import calibrate
from tasks.evaluate import classification_metrics
from tasks.train import build_model, predict_proba_aligned
import numpy as np
c = open_campaign(sys.argv[1])
items = c.ledger.items_frame()
vec = c.featurizer()
n_lab = int(sys.argv[3])
lab = items[items["split"].isin(["pool", "seed"])].sample(n=n_lab, random_state=0)
test, cal = items[items["split"] == "test"], items[items["split"] == "calibration"]
pool = items[items["split"] == "pool"]
times = []
for _ in range(int(sys.argv[4])):
    t0 = time.perf_counter()
    for arm in c.cfg.arms:
        model = build_model(vec, C=c.cfg.model.C).fit(lab["text"].tolist(), lab["known_label"].tolist())
        p = predict_proba_aligned(model, test["text"], c.labels)
        classification_metrics(test["known_label"].tolist(), p, c.labels)
        p_cal = predict_proba_aligned(model, cal["text"], c.labels)
        idx = {l: i for i, l in enumerate(c.labels)}
        calibrate.calibration_report(p_cal, np.array([idx[y] for y in cal["known_label"]]), method="temperature",
                                     gate=0.1)
        predict_proba_aligned(model, pool["text"], c.labels)  # score the pool
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
'''

WARM = r'''
import json, sys, time
sys.path.insert(0, sys.argv[2])
from flows.cli import orchestrate
orchestrate()
from flows.round import round_flow
round_flow(sys.argv[1])  # warm-up: imports, first MLflow/Prefect calls
times = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); round_flow(sys.argv[1]); times.append(time.perf_counter() - t0)
mods = [m for m in ("great_expectations", "mlflow", "prefect", "sklearn") if m in sys.modules]
print(json.dumps({"times": times, "modules": mods}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="generated texts (default 10,000)")
    ap.add_argument("--runs", type=int, default=5, help="runs per command (median)")
    ap.add_argument("--write-results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args()

    from flows.demo import prepare_demo

    work = Path(tempfile.mkdtemp(prefix="labelloop-cli-latency-"))
    env = {**os.environ, "PREFECT_API_URL": "", "LABELLOOP_PREFECT_HOME": str(work / "prefect"),
           "LABELLOOP_PREFECT_UI": "0", "NO_COLOR": "1"}
    from tests.conftest import free_port

    env["LABELLOOP_PREFECT_PORT"] = str(free_port())
    cli = [sys.executable, "-m", "flows.cli"]
    rounds_needed = 2 * args.runs + 2
    cfg = prepare_demo(work / "campaign", n=args.n, budget=50 * (rounds_needed + 2), batch_size=50,
                       backend="simulated")
    cfg.write_text(cfg.read_text().replace("max_rounds = 50", f"max_rounds = {rounds_needed + 5}"))
    t_wall = time.perf_counter()
    rows: list[tuple[str, float, list[float], str]] = []
    try:
        imports = import_times(args.runs, env)
        t_server = timed([*cli, "server", "start"], env)
        t_setup = timed([*cli, "setup", str(cfg)], env)

        med, xs = median_of(args.runs, lambda: timed([*cli, "--help"], env))
        rows.append(("labelloop --help", med, xs, "< 0.5 s"))
        med, xs = median_of(args.runs, lambda: timed([*cli, "status", str(cfg)], env))
        rows.append(("labelloop status", med, xs, "< 3 s"))

        bad = work / "bad"
        (bad / "data").mkdir(parents=True)
        text = cfg.read_text()
        pool = cfg.parent / "data" / "pool.csv"
        shutil.copy(pool, bad / "data" / "pool.csv")
        (bad / "config.toml").write_text(text.replace('strategy = "margin"', 'strategy = "nope"'))
        (bad / "missing.toml").write_text(text.replace('path = "data/pool.csv"', f'path = "{bad}/data/gone.csv"'))
        (bad / "column.toml").write_text(text.replace('path = "data/pool.csv"', f'path = "{bad}/data/pool.csv"')
                                         .replace('text_column = "text"', 'text_column = "body"'))
        lines = pool.read_text().splitlines()
        (bad / "data" / "contract.csv").write_text("\n".join([lines[0], *lines[1:], lines[1]]) + "\n")  # dup id
        (bad / "contract.toml").write_text(text.replace('path = "data/pool.csv"', f'path = "{bad}/data/contract.csv"'))
        for name, label in [("config", "setup: bad config"), ("missing", "setup: missing file"),
                            ("column", "setup: missing column")]:
            med, xs = median_of(args.runs, lambda n=name: timed([*cli, "setup", str(bad / f"{n}.toml")], env, 2))
            rows.append((f"labelloop {label}", med, xs, "< 3 s"))
        med, xs = median_of(args.runs, lambda: timed([*cli, "setup", str(bad / "contract.toml")], env, 2))
        gx = imports["great_expectations"]
        rows.append(("labelloop setup: data contract fails", med, xs, f"≤ GX import + 2 s = {gx + 2:.1f} s"))

        res = subprocess.run([sys.executable, "-c", BARE, str(cfg), str(ROOT), "300", str(args.runs)], env=env,
                             capture_output=True, text=True, check=True)
        bare_xs = json.loads(res.stdout.strip().splitlines()[-1])
        bare = statistics.median(bare_xs)

        med_cli, xs_cli = median_of(args.runs, lambda: timed([*cli, "round", str(cfg)], env))
        res = subprocess.run([sys.executable, "-c", WARM, str(cfg), str(ROOT), str(args.runs)], env=env,
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"warm rounds failed:\n{res.stderr[-3000:]}")
        warm = json.loads(res.stdout.strip().splitlines()[-1])
        round_libs = [k for k, m in LIBS.items() if m in warm["modules"]]
        lib_import = sum(imports[k] for k in round_libs)
        rows.append(("labelloop round (CLI, fresh process)", med_cli, xs_cli,
                     f"≤ bare + imports ({', '.join(round_libs)}) + 5 s = {bare + lib_import + 5:.1f} s"))
        rows.append(("round in a warm process", statistics.median(warm["times"]), warm["times"],
                     f"≤ bare + 5 s = {bare + 5:.1f} s"))
        rows.append(("bare model work of a round (2 arms)", bare, bare_xs, "reference"))
    finally:
        subprocess.run([*cli, "server", "stop"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    def ok(med: float, target: str) -> str:
        if target == "reference":
            return ""
        limit = float(target.split("=")[-1].replace("s", "").replace("<", "").replace("≤", "").strip()) \
            if "=" in target else float(target.split()[1])
        return "met" if med < limit or (target.startswith("≤") and med <= limit) else "MISSED"

    load = os.getloadavg()
    out = [START, "## CLI latency (issue 18)", "",
           f"Generated by `benchmarks/cli_latency.py` ({args.runs} runs per command, median; {args.n:,} generated "
           f"texts, simulated backend, 50-label batches, two arms). Machine: {platform.machine()}, "
           f"{os.cpu_count()} cores, Python {platform.python_version()}; load average at the end "
           f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min: the machine was shared). "
           f"Wall time {time.perf_counter() - t_wall:.0f} s.", "",
           "| command | median (s) | runs (s) | target | verdict |", "|---|---:|---|---|---|"]
    for name, med, xs, target in rows:
        out.append(f"| {name} | {med:.2f} | {', '.join(f'{x:.1f}' for x in xs)} | {target} | {ok(med, target)} |")
    out += ["", "| import (same run, `python -c \"import X\"` minus bare start-up) | median (s) |", "|---|---:|"]
    out += [f"| {k} | {v:.2f} |" for k, v in imports.items()]
    out += ["", f"Once per machine (not in the medians): first start of the shared local Prefect server "
                f"(`labelloop server start`, fresh database) {t_server:.1f} s; `setup` of the 10,000-text campaign "
                f"{t_setup:.1f} s. Read-only and failing commands never import Prefect; `round` reaches the "
                f"shared server instead of starting a temporary one (15–30 s before this change).", END]
    table = "\n".join(out)
    print(table)
    if args.write_results:
        text = RESULTS.read_text(encoding="utf-8")
        if START in text:
            text = text[: text.index(START)] + table + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + table + "\n"
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
