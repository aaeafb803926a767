"""Scale-out (issue 7): a real round whose pool is scored in partitions on a local Dask cluster
(prefect-dask, 2 worker processes) queries the same items as the same campaign on the thread runner."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from labelloop.flows.runtime import open_campaign
from tests.conftest import run_cli, write_small_campaign

pytestmark = pytest.mark.integration

PARTITION = 100  # the smallest [scale] partition_size: the ~550-text pool is cut into 6 partitions


def _scale(runner: str) -> str:
    return f'[scale]\npartition_size = {PARTITION}\ntask_runner = "{runner}"\ndask_workers = 2\n'


def _partition_task_runs(api: str, config: Path) -> int:
    """Completed shortlist-partition task runs of the round flow run that ran ``config`` (a pool larger than
    one partition selects through the bounded path, flows.scoring.select_from_pool)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def count() -> int:
        async with get_client() as client:
            flow_runs = [f for f in await client.read_flow_runs(limit=200)
                         if (f.parameters or {}).get("config") == str(config)]
            assert len(flow_runs) == 1, f"{len(flow_runs)} flow runs for {config}"
            runs = await client.read_task_runs(limit=200, flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_runs[0].id])), task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="shortlist-partition")))
            return sum(1 for r in runs if r.state is not None and r.state.is_completed())

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return asyncio.run(count())


def test_round_on_local_dask_cluster_queries_the_same_items_as_threads(prefect_api, tmp_path: Path):
    if importlib.util.find_spec("prefect_dask") is None:
        pytest.fail("prefect-dask is not installed: it is part of the test extra "
                    "(pip install -c constraints.txt -e '.[test]'); the Dask scale-out path is untested without it",
                    pytrace=False)
    runners = ("threads", "dask")
    configs = {r: write_small_campaign(tmp_path / r, name=f"scale-{r}", extra=_scale(r)) for r in runners}

    def round_one(runner: str):
        t0 = time.monotonic()
        res = run_cli("round", str(configs[runner]), env={"PREFECT_API_URL": prefect_api}, timeout=400)
        print(f"{runner}: setup + round 1 in {time.monotonic() - t0:.1f} s")
        return res

    with ThreadPoolExecutor(2) as pool:  # the two campaigns are independent: run them side by side
        results = dict(zip(runners, pool.map(round_one, runners)))

    queried = {}
    for runner, res in results.items():
        assert res.returncode == 0, f"{runner} round failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
        c = open_campaign(configs[runner])
        assert c.cfg.scale.task_runner == runner
        pool_size = int((c.ledger.items_frame()["split"] == "pool").sum())
        parts = -(-pool_size // PARTITION)
        assert parts >= 4, f"pool of {pool_size} gives only {parts} partitions"
        # one shortlist-partition task per partition and arm (the arms' pools differ by the seed items at most)
        ran = _partition_task_runs(prefect_api, configs[runner])
        assert ran >= 2 * (parts - 1), f"{runner}: {ran} shortlist-partition task runs for {parts} partitions x 2 arms"
        q = c.ledger.queries_frame(round_no=1)
        assert q.groupby("arm").size().to_dict() == {"active": 25, "random": 25}
        queried[runner] = {arm: g["item_id"].tolist() for arm, g in q.groupby("arm")}

    assert queried["dask"] == queried["threads"], "same seed, same queried items, whatever the task runner"
