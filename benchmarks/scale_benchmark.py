"""Scale-out benchmark (issue 7): one round's train + query step on pools of 100k, 300k and 1M texts.

For every pool size a fresh subprocess (so peak RSS does not carry over from
a smaller size) loads a generated pool, fits the TF-IDF featuriser once on
the first 50k texts (campaign setup, not part of a round, untimed) and then
measures, in the same process, on the same pool and labelled set:

* **bare** — plain scikit-learn: ``build_model(vec).fit(labelled)`` then
  ``predict_proba`` over the whole pool, in one piece, no Prefect.
* **round** — what ``flows/round.py`` does for one arm (``flows.stages.query_batch``):
  ``train_model`` on the labelled set, then, for a pool larger than one partition,
  ``flows.scoring.select_from_pool`` (partitions of ``--partition-size`` texts as
  Prefect tasks on the configured task runner, each keeping its short list; issue 16),
  else ``score_pool`` + ``tasks.query.select_batch`` (margin, batch ``--batch``, 10 %
  random share, near-duplicate guard, diversity) over the whole pool.
* **bounded** — ``train_model`` + ``flows.scoring.select_from_pool``: the
  same partitions, but each keeps only its short list (top-k merge), so no
  pool-sized matrix is ever assembled.

Seconds are the median over ``--repeats`` (fewer at 1M when asked with
``--repeats-large``); *items/s* is pool size / round seconds; *ratio* is the
round's seconds / bare seconds; peak RSS is the largest resident set of the
process and its children (Dask workers) sampled every 20 ms during that
phase, plus the process's ``ru_maxrss`` over the whole size.

A Prefect API is needed for the task runs: ``PREFECT_API_URL`` when set,
otherwise a ``prefect server start`` on a free local port for the run.

Run from the repository root::

    .venv/bin/python benchmarks/scale_benchmark.py                        # 100k, 300k, 1M; threads
    .venv/bin/python benchmarks/scale_benchmark.py --runners threads,dask --write-results
    .venv/bin/python benchmarks/scale_benchmark.py --sizes 20000 --repeats 1   # smoke
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefect import flow  # noqa: E402
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- scale-benchmark:start -->", "<!-- scale-benchmark:end -->"
GIB = 1024 ** 3


# --------------------------------------------------------------------------- pool
def pool_file(n: int, cache: Path) -> Path:
    """A Parquet file with at least ``n`` generated support tickets (tasks/demo_data.py), cached."""
    import pandas as pd

    from labelloop.tasks.demo_data import generate_demo_corpus

    cache.mkdir(parents=True, exist_ok=True)
    have = sorted(cache.glob("pool-*.parquet"), key=lambda p: int(p.stem.split("-")[1]))
    for p in have:
        if int(p.stem.split("-")[1]) >= n:
            return p
    path = cache / f"pool-{n}.parquet"
    t0 = time.perf_counter()
    chunks = [generate_demo_corpus(n=min(100_000, n - s), seed=1000 + s // 100_000, id_prefix=f"s{s // 100_000}")
              for s in range(0, n, 100_000)]
    pd.concat(chunks, ignore_index=True)[["id", "text", "label"]].to_parquet(path, index=False)
    print(f"generated {n:,} texts in {time.perf_counter() - t0:.0f} s -> {path}", file=sys.stderr, flush=True)
    return path


# --------------------------------------------------------------------------- memory
class PeakRSS:
    """Samples the RSS of this process + its children every ``interval`` s; ``phase()`` resets the peak."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        total = self.proc.memory_info().rss
        for ch in self.proc.children(recursive=True):
            try:
                total += ch.memory_info().rss
            except Exception:  # a child that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def phase(self) -> None:
        gc.collect()
        time.sleep(2 * self.interval)
        self.peak = self.rss()

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- one size (subprocess)
# prefect-dask ships the flow-run context, flow object included, with every partition task, and
# cloudpickle pickles a @flow's function *by value* together with the globals it uses. So the round's
# inputs live in ``_STATE``, which only the plain function ``_round_query`` (pickled by reference: the
# child runs as the importable module ``scale_benchmark``, see main) touches; a flow that referred to
# the pool itself would send the whole pool along with each partition. ``flows.round.round_flow``
# refers to module functions only.
_STATE: dict = {}


@flow(name="scale-benchmark-round", persist_result=False)
def round_query(bounded: bool) -> dict:
    return _round_query(bounded)


def _round_query(bounded: bool) -> dict:
    """What one arm of a round does after pulling labels: train, then select over the pool.

    *round* follows ``flows.stages.query_batch``: a pool larger than one partition goes through
    ``select_from_pool`` with the labelled rows handed over (issue 16), a smaller one is scored in one
    piece and selected by ``select_batch``; *bounded* is ``select_from_pool`` without the labelled rows
    (the issue-7 column, kept for comparison).
    """
    import numpy as np

    from labelloop.flows.scoring import score_pool, select_from_pool
    from labelloop.tasks import query
    from labelloop.tasks.train import train_model

    s = _STATE
    t0 = time.perf_counter()
    model = train_model(s["vec"], s["lab_texts"], s["lab_y"])
    t1 = time.perf_counter()
    if bounded or len(s["pool"]) > s["scale"].partition_size:
        X_lab = None if bounded else s["vec"].transform(s["lab_texts"])
        picks = select_from_pool(model, s["vec"], s["pool"], s["classes"], s["batch"], "margin", 0, random_share=0.1,
                                 X_labelled=X_lab, y_labelled=None if bounded else s["lab_y"],
                                 near_duplicate_threshold=0.95, scale=s["scale"])
        t2 = t3 = time.perf_counter()
    else:
        X_pool, proba = score_pool(model, s["vec"], s["pool"], s["classes"], scale=s["scale"])
        t2 = time.perf_counter()
        X_lab = s["vec"].transform(s["lab_texts"])
        picks = query.select_batch(proba, s["batch"], "margin", np.random.default_rng([0, 1, 0]), random_share=0.1,
                                   X_pool=X_pool, X_labelled=X_lab, near_duplicate_threshold=0.95)
        t3 = time.perf_counter()
        del X_pool, proba
    assert len(picks) == s["batch"]
    return {"fit": t1 - t0, "score": t2 - t1, "select": t3 - t2, "total": t3 - t0}


def measure(n: int, path: Path, runner: str, partition_size: int, repeats: int, n_labelled: int,
            batch: int, dask_workers: int) -> dict:
    import pandas as pd

    from labelloop.flows.scoring import ScaleSettings
    from labelloop.tasks.demo_data import CLASSES
    from labelloop.tasks.train import build_model, fit_featurizer

    df = pd.read_parquet(path).iloc[: n + n_labelled]
    lab = df.iloc[:n_labelled]
    pool = df["text"].iloc[n_labelled:].tolist()
    lab_texts, lab_y = lab["text"].tolist(), lab["label"].tolist()
    classes = list(CLASSES)
    del df
    vec = fit_featurizer(pool[:50_000])
    scale = ScaleSettings(partition_size=partition_size, task_runner=runner, dask_workers=dask_workers)
    mem = PeakRSS()
    out: dict = {"n": len(pool), "runner": runner, "partition_size": partition_size, "repeats": repeats,
                 "n_labelled": n_labelled, "batch": batch, "baseline_rss": mem.rss()}

    def bare() -> dict:
        t0 = time.perf_counter()
        model = build_model(vec).fit(lab_texts, lab_y)
        t1 = time.perf_counter()
        p = model.predict_proba(pool)
        t2 = time.perf_counter()
        assert p.shape == (len(pool), len(classes))
        return {"fit": t1 - t0, "score": t2 - t1, "total": t2 - t0}

    _STATE.update(vec=vec, lab_texts=lab_texts, lab_y=lab_y, pool=pool, classes=classes, batch=batch, scale=scale)
    phases = {"bare": bare, "round": lambda: round_query(False), "bounded": lambda: round_query(True)}
    for name, fn in phases.items():
        runs, peak = [], 0
        for _ in range(repeats):
            mem.phase()
            runs.append(fn())
            peak = max(peak, mem.peak)
            print(f"  {n:>9,} {runner:<7} {name:<7} {runs[-1]['total']:7.1f} s  peak {mem.peak / GIB:.2f} GiB",
                  file=sys.stderr, flush=True)
        out[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        out[name]["all"] = [round(r["total"], 2) for r in runs]
        out[name]["peak_rss"] = peak
    mem.stop()
    out["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


# --------------------------------------------------------------------------- driver
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": ""}
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port), "--no-ui", "--analytics-off"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError("prefect server did not start within 180 s")


def machine() -> str:
    import psutil
    import sklearn

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / GIB:.0f} GiB RAM, "
            f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}, {platform.system()}")


def table(rows: list[dict]) -> str:
    head = ("| pool | runner | bare fit + predict_proba (s) | round: train + score + select (s) | items scored/s "
            "| round / bare | peak RSS round | peak RSS bare | bounded top-k round (s) | bounded / bare "
            "| peak RSS bounded |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        b, rd, bd = r["bare"], r["round"], r["bounded"]
        lines.append(
            f"| {r['n']:,} | {r['runner']} | {b['total']:.1f} ({b['fit']:.1f} + {b['score']:.1f}) "
            f"| {rd['total']:.1f} ({rd['fit']:.1f} + {rd['score']:.1f} + {rd['select']:.1f}) "
            f"| {r['n'] / rd['total']:,.0f} | {rd['total'] / b['total']:.2f}x | {rd['peak_rss'] / GIB:.2f} GiB "
            f"| {b['peak_rss'] / GIB:.2f} GiB | {bd['total']:.1f} | {bd['total'] / b['total']:.2f}x "
            f"| {bd['peak_rss'] / GIB:.2f} GiB |")
    return "\n".join(lines)


def write_results(md: str) -> None:
    """Put ``md`` between the scale-benchmark markers of RESULTS.md (appended at the end the first time)."""
    text = RESULTS.read_text(encoding="utf-8")
    block = f"{START}\n{md.strip()}\n{END}"
    if START in text and END in text:
        a, rest = text.split(START, 1)
        text = a + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,300000,1000000", help="pool sizes, comma-separated")
    ap.add_argument("--runners", default="threads", help="threads and/or dask, comma-separated")
    ap.add_argument("--partition-size", type=int, default=200_000)  # = flows.scoring.DEFAULT_PARTITION_SIZE
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeats-large", type=int, default=None, help="repeats for pools of 1M and more")
    ap.add_argument("--labelled", type=int, default=500, help="labelled texts the round trains on")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--dask-workers", type=int, default=2)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "labelloop-scale-bench"))
    ap.add_argument("--out", default=None, help="also write the raw results as JSON here")
    ap.add_argument("--write-results", action="store_true", help="put the table into benchmarks/RESULTS.md")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:  # one (size, runner) in this process; JSON on stdout
        n, runner, path, repeats = args.child.split("|")
        res = measure(int(n), Path(path), runner, args.partition_size, int(repeats), args.labelled, args.batch,
                      args.dask_workers)
        print("RESULT " + json.dumps(res))
        return

    command = "python benchmarks/scale_benchmark.py " + shlex.join(sys.argv[1:])
    sizes = [int(s) for s in args.sizes.split(",")]
    runners = [r.strip() for r in args.runners.split(",")]
    path = pool_file(max(sizes) + args.labelled, Path(args.cache))
    server, home = None, None
    env = dict(os.environ)
    if not os.environ.get("PREFECT_API_URL"):
        home = Path(tempfile.mkdtemp(prefix="labelloop-bench-prefect-"))
        server, env["PREFECT_API_URL"] = start_prefect_server(home)
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT), env.get("PYTHONPATH", "")])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the Prefect server on kill
    rows = []
    try:
        for n in sizes:
            for runner in runners:
                repeats = args.repeats_large if (args.repeats_large and n >= 1_000_000) else args.repeats
                cmd = [sys.executable, "-c", "import scale_benchmark; scale_benchmark.main()",
                       "--child", f"{n}|{runner}|{path}|{repeats}",
                       "--partition-size", str(args.partition_size), "--labelled", str(args.labelled),
                       "--batch", str(args.batch), "--dask-workers", str(args.dask_workers)]
                proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    raise SystemExit(f"{n} / {runner} failed with exit code {proc.returncode}")
                rows.append(json.loads(line[-1][len("RESULT "):]))
                if args.out:
                    Path(args.out).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
    md = (f"{table(rows)}\n\nCommand: `{command}`  \nMachine: {machine()}  \n"
          f"Partitions of {args.partition_size:,} texts; {args.labelled} labelled texts; batch {args.batch} (margin, "
          f"10 % random); seconds are medians over {args.repeats} repeat(s)"
          + (f" ({args.repeats_large} at 1M)" if args.repeats_large else "") + ".")
    print(md)
    if args.write_results:
        write_results(md)


if __name__ == "__main__":
    main()
