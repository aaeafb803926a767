"""What `round` and `stream` refuse on a real campaign, and that a refusal writes nothing (review of the CLI).

One small simulated campaign, run to the end through the installed entry point against the session's
Prefect API, then:

* `round` on the finished campaign runs nothing (no new round in the ledger), says what stopped it
  and how to go on; `--round` beyond the next round is exit 2 (it used to run round 99 and end the
  campaign through max_rounds);
* a label set renamed under the same version stops `round` before the pull: the answers waiting
  in the backend are not stored under the wrong label set;
* raising the budget reopens the campaign: a plain `round` (as a schedule runs it) goes on;
* `stream` checks every arrival file before writing: one id with two texts in two files, and an
  arrival without a label on the simulated backend (whose annotators answer from known labels), are
  exit 2 naming the file and row, with the ledger unchanged and the files not marked consumed;
* a `stream` run killed between its decisions and the push (``LABELLOOP_KILL_AT``) leaves queued items
  that the next run pushes even with no new file (it used to push only what it decided itself).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli, write_small_campaign

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _ledger_counts(cfg: Path) -> dict[str, int]:
    from labelloop.flows.runtime import open_campaign

    c = open_campaign(cfg)
    return {"rounds": len(c.ledger.list_rounds()), "annotations": len(c.ledger.annotations_frame()),
            "items": c.ledger.n_items(), "stream_files": len(c.ledger.stream_files_seen()),
            "queries": len(c.ledger.queries_frame())}


def test_round_and_stream_refuse_without_writing(prefect_api, tmp_path: Path) -> None:
    env = {"PREFECT_API_URL": prefect_api}
    cfg = write_small_campaign(tmp_path, name=f"guards-{tmp_path.name[-8:]}", n=600, budget=50, batch=25,
                               seed_size=25)
    first = run_cli("run", str(cfg), "--rounds", "1", env=env)  # round 1's batch is pushed, its answers not pulled
    assert first.returncode == 0, first.stdout + first.stderr
    before = _ledger_counts(cfg)
    text = cfg.read_text(encoding="utf-8")
    from labelloop.tasks.demo_data import CLASSES

    renamed = cfg.with_name("renamed.toml")  # same campaign, one label renamed, version not bumped
    renamed.write_text(text.replace(f'"{CLASSES[-1]}"', '"misc"'), encoding="utf-8")
    changed = run_cli("round", str(renamed), env=env)
    assert changed.returncode == 2 and "bump labels.version" in changed.stderr, changed.stdout + changed.stderr
    assert _ledger_counts(cfg) == before, "the waiting answers were pulled under the wrong label set"

    done = run_cli("run", str(cfg), env=env)
    assert done.returncode == 0 and "campaign finished" in done.stdout, done.stdout + done.stderr
    before = _ledger_counts(cfg)
    from labelloop.flows.campaign_state import next_round_no
    from labelloop.flows.runtime import open_campaign

    nxt = next_round_no(open_campaign(cfg))
    shown = run_cli("status", str(cfg), env={"PREFECT_API_URL": ""})  # the settle pass is no round of its own
    assert f"trust (after round {nxt - 1})" in shown.stdout and " settled=" in shown.stdout, shown.stdout

    again = run_cli("round", str(cfg), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "is finished (active: budget spent" in again.stdout and f"--round {nxt}" in again.stdout, again.stdout
    assert again.stdout.count("no round ran") == 1 and _ledger_counts(cfg) == before

    ahead = run_cli("round", str(cfg), "--round", str(nxt + 1), env=env)
    assert ahead.returncode == 2 and "rounds are never skipped" in ahead.stderr, ahead.stdout + ahead.stderr
    assert len(ahead.stderr.strip().splitlines()) == 1 and _ledger_counts(cfg) == before
    behind = run_cli("round", str(cfg), "--round", "1", env=env)  # finished: it used to pull and re-decide round 1
    assert behind.returncode == 2 and "is finished for every arm" in behind.stderr, behind.stdout + behind.stderr
    assert len(behind.stderr.strip().splitlines()) == 1 and _ledger_counts(cfg) == before

    cfg.write_text(text.replace("max_labels = 50", "max_labels = 75"), encoding="utf-8")
    more = run_cli("round", str(cfg), env=env)  # a raised budget reopens the campaign: no --round needed
    assert more.returncode == 0, more.stdout + more.stderr
    c = open_campaign(cfg)
    active = [r for r in c.ledger.list_rounds(arm="active") if r.round_no == nxt]
    assert active and active[0].status == "done", "the raised budget did not reopen the arm"
    assert len(c.ledger.queries_frame(arm="active", round_no=nxt)) == 25, "the raised budget was not spent"

    before = _ledger_counts(cfg)
    arrivals = tmp_path / "arrivals"
    arrivals.mkdir()
    label = CLASSES[0]
    pd.DataFrame({"id": ["s1", "s2"], "text": ["refund my last invoice", "parcel lost"],
                  "label": [label, label]}).to_csv(arrivals / "a.csv", index=False)
    pd.DataFrame({"id": ["s3", "s1"], "text": ["where is my order", "a different text"],
                  "label": [label, label]}).to_csv(arrivals / "b.csv", index=False)
    twice = run_cli("stream", str(cfg), "--arrivals", str(arrivals), env=env)
    assert twice.returncode == 2 and "b.csv: row 2: id 's1' is also in" in twice.stderr, twice.stdout + twice.stderr
    assert _ledger_counts(cfg) == before

    (arrivals / "b.csv").unlink()
    pd.DataFrame({"id": ["u1"], "text": ["no label here"]}).to_csv(arrivals / "c.csv", index=False)
    unlabelled = run_cli("stream", str(cfg), "--arrivals", str(arrivals), env=env)
    assert unlabelled.returncode == 2 and "c.csv: row 1: no label" in unlabelled.stderr, \
        unlabelled.stdout + unlabelled.stderr
    assert _ledger_counts(cfg) == before

    # a stream run killed between its decisions and the push: the next run (no new file) pushes what it left
    (arrivals / "c.csv").unlink()
    from labelloop.tasks.demo_data import generate_demo_corpus

    generate_demo_corpus(60, seed=5, id_prefix="late").to_csv(arrivals / "d.csv", index=False)
    killed = run_cli("stream", str(cfg), "--arrivals", str(arrivals), env={**env, "LABELLOOP_KILL_AT": "stream-after-decide"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    c = open_campaign(cfg)
    queued = set(c.ledger.queries_frame(arm="stream")["item_id"])
    assert queued and not queued & set(c.ledger.task_ids()), "the killed run should have queued items, unpushed"
    rerun = run_cli("stream", str(cfg), "--arrivals", str(arrivals), env=env)
    assert rerun.returncode == 0 and "0 new arrival(s)" in rerun.stdout, rerun.stdout + rerun.stderr
    assert queued <= set(open_campaign(cfg).ledger.task_ids()), "the rerun did not push what the killed run left"

