"""The reopen flow: new data arrived and drifted, so put it in front of the query strategy.

Triggered by the ``labelloop.drift.detected`` event (deployment trigger from
``labelloop serve`` / ``labelloop deploy`` / ``prefect.yaml``), or run by hand.
It

1. ingests the arrivals through the same contract as set-up (``load_table`` +
   the Great Expectations pool contract: a bad file writes nothing) into the
   query pool (split ``pool``), tagged with the drift episode id;
2. refits the TF-IDF featuriser on the enlarged pool (``[drift]
   refit_featurizer``), so the new vocabulary counts;
3. raises the random/diversity share of the next ``[drift] reopen_rounds``
   rounds to ``reopen_random_share`` (stored in the ledger; the round's plan,
   :func:`tasks.policy.random_share`, reads it through :func:`flows.campaign_state.drift_boost`);
4. starts a round (a subflow; it takes the campaign's round lock like any
   other round, so it never queries at the same time as a scheduled one).

Why idempotent: events can be delivered twice and people re-send alerts.
Items are insert-or-ignore by id, and an episode already seen neither adds
items, nor extends the boost, nor spends labels on another round.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from labelloop.flows.campaign_state import (BOOST_KEY, EPISODES_KEY, effective_random_share,  # noqa: F401
                                  episodes, next_round_no, reopen_boost)  # re-exported: read-only, Prefect-free
from labelloop.flows.drift import episode_id, load_arrivals
from labelloop.flows.locking import round_lock
from labelloop.flows.round import round_flow
from labelloop.flows.runtime import Campaign, open_campaign
from labelloop.flows.setup import ensure_setup
from labelloop.integrations.expectations import validate_pool
from labelloop.tasks.train import make_featurizer

# --------------------------------------------------------------------------- ingest
def _blank(v: str | None) -> bool:
    return v is None or str(v).strip() in ("", "None", "null")


def ingest_arrivals(c: Campaign, path: Path, episode: str) -> dict[str, Any]:
    """Validate the arrivals and add the new ones to the pool (insert-or-ignore). Writes nothing on a bad file."""
    frame = load_arrivals(c, path)
    validate_pool(frame, label_set=c.labels, max_text_length=c.cfg.data.max_text_length, source=str(path))
    frame = frame.copy()
    frame["split"] = "pool"
    added = c.ledger.add_items(frame, episode=episode)
    return {"arrivals": str(path), "rows": int(len(frame)), "added": int(added),
            "already_present": int(len(frame) - added)}


def refit_featurizer(c: Campaign) -> int:
    """Refit the campaign's featuriser on every pool + seed text (never test / calibration), like
    set-up does: TF-IDF learns the new vocabulary; MiniLM (frozen) embeds the new texts into its cache.
    The kind is the one set-up chose (``Campaign.featurizer_kind``), so ``auto`` does not switch features
    mid-campaign because the MiniLM extra was installed since."""
    items = c.ledger.items_frame(splits=["pool", "seed"])
    c.save_featurizer(make_featurizer(c.featurizer_kind, items["text"].tolist(),
                                      max_features=c.cfg.model.max_features, ngram_max=c.cfg.model.ngram_max))
    return int(len(items))


def reopen(c: Campaign, *, arrivals: str | None, episode: str | None, reason: str | None,
           event_id: str | None) -> dict[str, Any]:
    """Steps 1-3 of the flow, under the round lock. Returns what happened (``new_episode`` says if anything did)."""
    path = Path(arrivals) if not _blank(arrivals) else c.cfg.arrivals_path
    if path is not None and not path.is_absolute():
        path = (c.cfg.base_dir / path).resolve()
    with round_lock(c):
        ensure_setup(c)
        if _blank(episode):
            episode = episode_id(c, path) if path is not None else None
        if _blank(episode):
            episode = "alert-" + (event_id[:8] if not _blank(event_id) else
                                  datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S"))
        seen = {e.get("episode") for e in episodes(c)}
        result: dict[str, Any] = {"campaign": c.name, "episode": episode, "arrivals": str(path) if path else None,
                                  "rows": 0, "added": 0, "already_present": 0, "reason": reason,
                                  "new_episode": episode not in seen, "boost": None, "featurizer_refit": False}
        if path is not None:
            result.update(ingest_arrivals(c, path, episode))
        if result["added"] and c.cfg.drift.refit_featurizer:
            refit_featurizer(c)
            result["featurizer_refit"] = True
        if not result["new_episode"] and not result["added"]:
            return result
        result["new_episode"] = True
        first = next_round_no(c)
        d = c.cfg.drift
        boost = {"episode": episode, "share": d.reopen_random_share, "first_round": first, "rounds": d.reopen_rounds}
        if d.reopen_rounds > 0:
            c.ledger.set_meta(BOOST_KEY, json.dumps(boost))
            result["boost"] = boost
        history = episodes(c)
        history.append({"episode": episode, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "arrivals": result["arrivals"], "added": result["added"], "reason": reason,
                        "event_id": None if _blank(event_id) else event_id, "first_round": first})
        c.ledger.set_meta(EPISODES_KEY, json.dumps(history[-200:]))
    return result


@flow(name="labelloop-reopen", log_prints=True)
def reopen_flow(config: str, arrivals: str | None = None, episode: str | None = None, reason: str | None = None,
                event_id: str | None = None, run_round: bool = True) -> dict[str, Any]:
    """Re-open the query pool after drift: ingest the arrivals, boost exploration, start a round.

    Parameters arrive from the ``labelloop.drift.detected`` event (``arrivals``,
    ``episode``, ``reason`` and ``event_id`` from its payload); empty values fall
    back to ``[drift] arrivals`` of the config.
    """
    logger = get_run_logger()
    c = open_campaign(config)
    result = reopen(c, arrivals=arrivals, episode=episode, reason=reason, event_id=event_id)
    if not result["new_episode"]:
        logger.info("campaign %s: drift episode %s was already handled and %s brought no new items; "
                    "nothing to do", c.name, result["episode"], result["arrivals"])
        result["round"] = None
        return result
    print(f"campaign {c.name!r}: drift episode {result['episode']}: {result['added']} new items in the pool "
          f"({result['already_present']} already there) from {result['arrivals']}"
          + (f"; random share {result['boost']['share']:.2f} for rounds {result['boost']['first_round']}-"
             f"{result['boost']['first_round'] + result['boost']['rounds'] - 1}" if result["boost"] else ""))
    # the drifted items must reach the query strategy even where the arms had stopped
    result["round"] = round_flow(config, even_if_finished=True) if run_round else None
    return result
