"""The `labelloop` command runs BLAS single-threaded unless the user sets the thread count.

Why it matters: on a 2-core machine shared with the Prefect and MLflow servers, a second BLAS
thread made a round's small fits 4-5x slower (issue 18). The setting must be in place before
numpy loads its BLAS, i.e. at the top of the CLI module, and an explicit user value must win.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from labelloop.flows.cli import BLAS_THREAD_VARS

PROBE = ("import labelloop.flows.cli, numpy, json; from threadpoolctl import threadpool_info; "
         "print(json.dumps(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'})))")


def _blas_threads(**env: str) -> list[int]:
    base = {k: v for k, v in os.environ.items() if k not in (*BLAS_THREAD_VARS, "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_cli_makes_blas_single_threaded_by_default():
    assert _blas_threads() == [1]


def test_an_explicit_thread_count_wins():
    assert _blas_threads(OPENBLAS_NUM_THREADS="2") == [2]
