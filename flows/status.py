"""`labelloop status`: where a campaign stands.

Why mostly from the ledger: it is the source of truth and answers even when
MLflow, Prefect or Label Studio are down. Only the next scheduled run comes
from the Prefect API, and only when one is configured (``PREFECT_API_URL``)
and answers within a few seconds; otherwise the line says "no schedule found".
"""

from __future__ import annotations

import json
from typing import Any

from labelloop.flows.campaign_state import macro_f1_ci
from labelloop.flows.config import round_triggers
from labelloop.flows.runtime import Campaign, open_set_up_campaign


def status_rows(config: str) -> list[dict]:
    c = open_set_up_campaign(config)
    return _rows(c)


def _rows(c: Campaign) -> list[dict]:
    rows = []
    for r in c.ledger.list_rounds():
        m = r.metrics
        rows.append({
            "round": r.round_no, "arm": r.arm, "status": r.status, "labels": r.n_labels,
            "macro_f1": m.get("test_macro_f1"), "accuracy": m.get("test_accuracy"),
            "test_n": int(m["test_n"]) if m.get("test_n") is not None else None, "macro_f1_ci": macro_f1_ci(m),
            "ece": m.get("calibration_ece"), "ece_after": m.get("calibration_ece_after"),
            "agreement": m.get("krippendorff_alpha"), "quarantined_batches": m.get("n_quarantined_batches"),
            "flagged_annotators": m.get("n_annotators_flagged"), "warnings": "; ".join(str(n) for n in r.notes),
            "started_at": r.started_at, "finished_at": r.finished_at,
        })
    return rows


def evaluation_status(c: Campaign) -> dict[str, Any]:
    """The test set and calibration slice: their sizes, where their labels come from, and — when people
    label them — the evaluation budget spent and how many are trusted so far (apart from the arms' labels)."""
    from labelloop.flows.trust import EVAL_ARM

    items = c.ledger.items_frame(splits=["test", "calibration"])
    q = c.ledger.queries_frame(arm=EVAL_ARM)
    rounds = c.ledger.trust.trust_rounds()
    m = rounds[max(rounds)]["metrics"] if rounds else {}
    known = items["known_label"].notna() if len(items) else None
    out: dict[str, Any] = {
        "test_size": int((items["split"] == "test").sum()) if len(items) else 0,
        "calibration_size": int((items["split"] == "calibration").sum()) if len(items) else 0,
        "known_labels": int(known.sum()) if known is not None else 0,
        "labelled_by_people": int(len(q)),
        "budget": c.cfg.budget.evaluation_labels if c.cfg.budget.evaluation_labels is not None else int(len(q)),
        "answers": int(m.get("evaluation_answers") or 0),
        "trusted_test": int(m.get("n_trusted_test") or 0),
        "trusted_calibration": int(m.get("n_trusted_calibration") or 0),
        "min_test_labels": c.cfg.splits.min_test_labels,
        "min_calibration_labels": c.cfg.splits.min_calibration_labels,
    }
    return out


def campaign_state(c: Campaign) -> dict[str, Any]:
    """``state`` (``waiting``, ``ready``, ``done``), ``waiting_for`` (a sentence, "" unless waiting) and the
    numbers behind a wait, as the last round attempt recorded them (status never asks the backend)."""
    from labelloop.flows.campaign_state import campaign_finished

    if campaign_finished(c):
        return {"state": "done", "waiting_for": "", "waiting": None}
    try:
        waiting = json.loads(c.ledger.get_meta("waiting") or "{}")
    except ValueError:
        waiting = {}
    if waiting.get("waiting_for"):
        return {"state": "waiting", "waiting_for": waiting["waiting_for"], "waiting": waiting}
    return {"state": "ready", "waiting_for": "", "waiting": None}


def pending_tasks(c: Campaign) -> tuple[int, int]:
    """(tasks pushed, tasks still short of ``overlap`` submitted annotations)."""
    tasks = c.ledger.tasks_frame()
    ann = c.ledger.annotations_frame(submitted_only=True)
    done = ann.groupby("item_id").size() if len(ann) else None
    finished = 0 if done is None else int((done.reindex(tasks["item_id"]).fillna(0) >= c.cfg.annotation.overlap).sum())
    return int(len(tasks)), int(len(tasks) - finished)


def next_runs(campaign: str, timeout: float = 5.0) -> dict[str, Any]:
    """Next scheduled run per deployment of the campaign, from the Prefect API.

    ``{"api": url | None, "runs": {deployment: iso time | None}, "error": str | None}``. Never
    starts a server: without ``PREFECT_API_URL`` it asks the shared local server labelloop started
    (``labelloop server``) when that one runs, and otherwise says there is none.
    """
    from labelloop.flows.prefect_server import api_url, running_url

    url = api_url() or running_url()
    out: dict[str, Any] = {"api": url or None, "runs": {}, "error": None}
    if not url:
        out["error"] = "no Prefect API: PREFECT_API_URL is not set and the shared server is not running"
        return out
    try:
        import httpx

        with httpx.Client(timeout=timeout) as http:
            http.get(f"{url.rstrip('/')}/health").raise_for_status()
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                    FlowRunFilterState, FlowRunFilterStateType)
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort
        from prefect.exceptions import ObjectNotFound

        from labelloop.flows.deploy import deployment_names

        from prefect.settings import PREFECT_API_URL, temporary_settings

        # the URL found (the shared server's, when PREFECT_API_URL is unset): never Prefect's temporary server
        with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            for kind, name in deployment_names(campaign).items():
                if kind == "reopen":
                    continue
                try:
                    dep = client.read_deployment_by_name(name)
                except ObjectNotFound:
                    continue
                if dep.paused:
                    out["runs"][name] = "paused"
                    continue
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1)
                out["runs"][name] = runs[0].expected_start_time.isoformat(timespec="seconds") if runs else None
    except Exception as err:  # noqa: BLE001 - status must answer with the API down
        out["error"] = f"Prefect API at {url} not reachable ({type(err).__name__})"
    return out


def _ci_text(ci: list[float] | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"


def print_status(config: str) -> None:
    from labelloop.flows.locking import lock_holder
    from labelloop.flows.campaign_state import episodes

    c = open_set_up_campaign(config)
    rows = _rows(c)
    print(f"campaign {c.name}: {c.ledger.n_items()} items, ledger {c.ledger.safe_url}")
    state = campaign_state(c)
    if state["state"] == "waiting":
        w = state["waiting"]
        print(f"state: WAITING since {w.get('since')} (last checked {w.get('checked_at')}): {state['waiting_for']}")
        print("  the next `labelloop round` trains once enough answers are in (or lower [run] batch_ready_share)")
    elif state["state"] == "ready":
        # status never asks the backend: "ready" means a round may run, not that answers are in
        print("state: ready (the next `labelloop round` pulls the answers first; it waits, exit 3, if the open "
              "batch is not answered enough; the task counts below are as of the last pull)")
    else:
        print(f"state: {state['state']}")
    print(f"{'round':>5} {'arm':<7} {'status':<8} {'labels':>6} {'macro-F1':>9} {'95% CI':>13} {'test_n':>6} "
          f"{'ECE':>6} {'ECE cal':>7} {'alpha':>6}  warnings")

    def f(v: object, w: int) -> str:
        return f"{v:>{w}.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{'-':>{w}}"

    for r in rows:
        print(f"{r['round']:>5} {r['arm']:<7} {r['status']:<8} {r['labels'] if r['labels'] is not None else '-':>6} "
              f"{f(r['macro_f1'], 9)} {_ci_text(r['macro_f1_ci']):>13} "
              f"{r['test_n'] if r['test_n'] is not None else '-':>6} {f(r['ece'], 6)} {f(r['ece_after'], 7)} "
              f"{f(r['agreement'], 6)}  "
              f"{r['warnings'] or '-'}")
    if not rows:
        print("  (no rounds yet)")
    from labelloop.flows.trust import trust_summary

    for line in trust_summary(c):  # agreement, quarantine decisions, annotator quality, adjudication
        print(line)
    ev = evaluation_status(c)
    if ev["labelled_by_people"]:
        print(f"evaluation: {ev['labelled_by_people']} test/calibration items labelled by people (budget "
              f"{ev['budget']}, {ev['answers']} answers); trusted so far: {ev['trusted_test']} of {ev['test_size']} test "
              f"(min {ev['min_test_labels']}), {ev['trusted_calibration']} of {ev['calibration_size']} calibration")
    pushed, pending = pending_tasks(c)
    print(f"annotation tasks pushed: {pushed}, pending (fewer than {c.cfg.annotation.overlap} annotations): {pending}")

    holder = lock_holder(c)
    if holder:
        print(f"round running: lock held by {holder.get('label')} since {holder.get('since')}")
    eps = episodes(c)
    if eps:
        last = eps[-1]
        print(f"drift episodes: {len(eps)}; last {last.get('episode')} at {last.get('at')}: "
              f"{last.get('added')} items added" + (f" ({last.get('reason')})" if last.get("reason") else ""))
    from labelloop.flows.campaign_state import active_random_share, next_round_no

    nxt = next_round_no(c)
    _share, why = active_random_share(c, nxt)  # a drift reopen or the random-ahead guard
    if why:
        print(f"round {nxt}: {why}")
    ad = adaptive_status(c)
    if ad is not None:
        if ad["round"] is None:
            print(f"adaptive strategy: no weights yet (the first batches use [query] random_share "
                  f"{c.cfg.query.random_share:.2f})")
        else:
            w = ", ".join(f"{k} {v:.2f}" for k, v in sorted(ad["weights"].items()))
            share = "" if ad["random_share"] is None else f"; its batch was {ad['random_share']:.0%} random"
            print(f"adaptive strategy: weights in round {ad['round']}: {w}{share}")

    print(f"rounds: {round_triggers(c.cfg)['sentence']}")
    st = stream_status(c)
    if st["arrivals"]:
        thr = st["threshold"]
        print(f"stream: {st['arrivals']} arrivals: {st['auto']} auto-labelled, {st['audit']} audited, "
              f"{st['routed']} to people, {st['held']} held; threshold "
              f"{'off (stopped by the audit gate)' if st['stopped'] else thr}; audits answered: see the MLflow "
              "stream runs (stream_audit_precision)")
    sched = next_runs(c.name)
    if sched["runs"]:
        for name, when in sched["runs"].items():
            print(f"next scheduled run of {name}: {when or 'none queued yet'}")
    else:
        why = sched["error"] or f"no deployments of campaign {c.name} on {sched['api']}"
        print(f"next scheduled run: no schedule found ({why})")


def stream_status(c: Campaign) -> dict[str, Any]:
    """Stream mode's decisions so far (``labelloop stream``): counts per route and the latest threshold."""
    frame = c.ledger.stream_frame()
    out: dict[str, Any] = {"arrivals": int(len(frame)),
                           **{r: int((frame["route"] == r).sum()) if len(frame) else 0
                              for r in ("auto", "audit", "routed", "held")}}
    last = frame.sort_values("decided_at").iloc[-1] if len(frame) else None
    out["threshold"] = None if last is None or last["threshold"] != last["threshold"] else last["threshold"]
    out["stopped"] = last is not None and out["threshold"] is None
    return out


def adaptive_status(c: Campaign) -> dict[str, Any] | None:
    """The ``adaptive`` strategy's weights in force (from the active arm's latest round), or None.

    Why shown: with ``[query] strategy = "adaptive"`` the active arm's random share is learnt
    round by round; a user deciding whether active learning pays on their data wants to see
    where the weights stand without opening MLflow.
    """
    from labelloop.tasks.strategies import ADAPTIVE_WEIGHT_METRIC as PREFIX

    if c.cfg.query.strategy != "adaptive":
        return None
    latest = None
    for r in c.ledger.list_rounds(arm="active"):
        if any(k.startswith(PREFIX) for k in r.metrics):
            latest = r
    if latest is None:
        return {"round": None, "weights": {}, "advantage": None, "random_share": None}
    weights = {k.removeprefix(PREFIX): float(v) for k, v in latest.metrics.items() if k.startswith(PREFIX)}
    adv, share = latest.metrics.get("adaptive_advantage"), latest.metrics.get("query_random_share")
    return {"round": latest.round_no, "weights": weights, "advantage": None if adv is None else float(adv),
            "random_share": None if share is None else float(share)}


def status_json(config: str) -> str:
    from labelloop.flows.trust import trust_status

    c = open_set_up_campaign(config)
    pushed, pending = pending_tasks(c)
    return json.dumps({"campaign": c.name, **campaign_state(c), "rounds": _rows(c), "tasks_pushed": pushed,
                       "tasks_pending": pending, "evaluation": evaluation_status(c),
                       "trust": trust_status(c), "round_triggers": round_triggers(c.cfg), "stream": stream_status(c),
                       "adaptive": adaptive_status(c),
                       "schedule": next_runs(c.name)}, default=str, indent=2)
