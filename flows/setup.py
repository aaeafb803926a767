"""Campaign set-up: ingest the pool under the data contract, carve splits, push the seed.

Why all of it is idempotent and validated before the first write: a bad input
file must leave the ledger untouched, and running set-up twice (or after a
crash half-way) must give the same splits, the same seed and no duplicates.
"""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger

from flows.logs import say
from flows.runtime import Campaign, open_campaign
from integrations.expectations import validate_pool
from integrations.sources import load_table
from tasks.seed import carve_splits
from tasks.train import fit_featurizer, make_featurizer


def load_and_validate(c: Campaign) -> pd.DataFrame:
    """Read the configured data and check it against the pool contract (raises on failure, writes nothing)."""
    d = c.cfg.data
    frame = load_table(c.cfg.data_path, id_col=d.id_column, text_col=d.text_column, label_col=d.label_column)
    validate_pool(frame, label_set=c.labels, max_text_length=d.max_text_length, source=str(c.cfg.data_path))
    return frame


SETUP_MARKER = ".labelloop-setup.json"


def _check_not_lost(c: Campaign) -> None:
    """Refuse to set up again a campaign whose folder says it was set up but whose ledger doesn't know it.

    Why: a ledger that was deleted (SQLite file removed, database dropped or swapped) would otherwise be
    re-created empty and the campaign would silently start over (round 1 again, new MLflow runs, tasks
    pushed again), losing the record of what was asked and answered.
    """
    import json

    from integrations.ledger import LedgerError

    marker = c.workdir / SETUP_MARKER
    if not marker.is_file():
        return
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    if info.get("campaign", c.name) != c.name:
        return  # another campaign shares this folder
    raise LedgerError(
        f"campaign {c.name!r} was set up (at {info.get('set_up_at', '?')}, ledger {info.get('ledger', '?')}) "
        f"but the ledger at {c.ledger.safe_url} has no record of it: the ledger was lost or the config points "
        f"at another database. Restore the ledger (nothing was written), or to start this campaign over in "
        f"this ledger delete {marker}")


def _write_marker(c: Campaign) -> None:
    import json
    from datetime import datetime, timezone

    marker = c.workdir / SETUP_MARKER
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"campaign": c.name, "ledger": c.ledger.safe_url,
                               "set_up_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}),
                   encoding="utf-8")
    tmp.replace(marker)


def ensure_setup(c: Campaign) -> bool:
    """Set the campaign up unless it already is. Returns True when work was done."""
    if c.ledger.get_meta("setup_done") == "1":
        if not (c.workdir / SETUP_MARKER).exists():
            _write_marker(c)  # campaigns set up before the marker existed
        return False
    _check_not_lost(c)
    from flows.round import push_pending

    s = c.cfg.splits
    if c.cfg.model.featurizer == "minilm":
        from tasks.embeddings import require_minilm

        require_minilm()  # before any write: the install command, not a half-set-up campaign
    frame = load_and_validate(c)
    features = None
    if s.seed_method == "kmeans":
        features = fit_featurizer(frame["text"], max_features=c.cfg.model.max_features,
                                  ngram_max=c.cfg.model.ngram_max).transform(frame["text"])
    split = carve_splits(frame, test_size=s.test_size, calibration_size=s.calibration_size,
                         seed_size=s.seed_size, seed_method=s.seed_method, random_state=s.random_state,
                         features=features, keywords=s.keywords or None)
    frame["split"] = split
    train_side = frame[frame["split"].isin(["pool", "seed"])]
    if c.cfg.model.featurizer == "minilm":
        say(f"embedding {len(train_side)} pool texts with all-MiniLM-L6-v2 (once; cached by text hash) ...")
    c.save_featurizer(make_featurizer(c.cfg.model.featurizer, train_side["text"].tolist(),
                                      max_features=c.cfg.model.max_features, ngram_max=c.cfg.model.ngram_max))
    c.ledger.add_items(frame)
    seed_ids = frame.loc[frame["split"] == "seed", "id"].astype(str).tolist()
    if s.seed_method == "keywords":
        counts = split.attrs["seed_counts"]
        say("seed by keywords: " + ", ".join(f"{lab} {k}" for lab, k in counts.items()) + f" of {len(seed_ids)}"
            + ("; a label whose rules matched nothing has no seed example: add keywords"
               if 0 in [k for lab, k in counts.items() if lab in s.keywords] else ""))
    for arm in c.cfg.arms:
        c.ledger.add_queries(arm, 0, [{"item_id": i, "strategy": f"seed-{s.seed_method}", "reason": "seed",
                                       "score": None, "model_version": None} for i in seed_ids])
    push_pending(c, 0, {})
    c.ledger.set_meta("setup_done", "1")
    _write_marker(c)  # after the ledger says so: a set-up killed before this point simply runs again
    say(f"campaign {c.name!r}: {len(frame)} items ingested "
          f"({(frame['split'] == 'pool').sum()} pool, {len(seed_ids)} seed, {(frame['split'] == 'test').sum()} test, "
          f"{(frame['split'] == 'calibration').sum()} calibration); seed pushed to the {c.backend.name} backend")
    return True


@flow(name="labelloop-setup", log_prints=True)
def setup_flow(config: str) -> dict:
    c = open_campaign(config)
    did = ensure_setup(c)
    if not did:
        get_run_logger().info("campaign %s is already set up (%d items)", c.name, c.ledger.n_items())
    return {"campaign": c.name, "items": c.ledger.n_items(), "new": did}
