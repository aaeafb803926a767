"""Campaign set-up: ingest the pool under the data contract, carve splits, push the seed.

Why all of it is idempotent and validated before the first write: a bad input
file must leave the campaign folder untouched (no ledger file, no workdir), and
running set-up twice (or after a crash half-way) must give the same splits, the
same seed and no duplicates.

Order of ``setup_flow`` (what ``labelloop setup`` calls):

1. :func:`preflight` — config, label limits, the data (read, pool contract,
   stratified labels), the splits (carved in memory) and, for Label Studio, the
   server: no Prefect, no file written. Every bad input stops here.
2. The Prefect flow ``labelloop-setup``: opens the ledger and writes items, seed
   queries, then pushes the seed. A failure from here on (the backend going away
   mid-push) keeps what was written, says what that is, and re-running resumes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger

from labelloop.flows.config import CampaignConfig, ConfigError, load_config
from labelloop.flows import logs
from labelloop.flows.logs import progress, say
from labelloop.flows.runtime import FEATURIZER_META, Campaign, make_backend, open_campaign
from labelloop.flows.stages import push_pending
from labelloop.flows.trust import EVAL_ARM
from labelloop.integrations.expectations import validate_pool
from labelloop.integrations.ledger import Ledger, LedgerError, sqlite_file
from labelloop.integrations.sources import InputError, load_table, load_table_maybe_unlabelled
from labelloop.tasks.seed import SplitError, carve_splits, default_seed_method
from labelloop.tasks.train import fit_featurizer, make_featurizer, resolve_featurizer, uses_minilm


def read_pool(cfg: CampaignConfig) -> pd.DataFrame:
    """Read the configured data and check it against the pool contract (raises on failure, writes nothing)."""
    d = cfg.data
    frame = _load_data(cfg)
    skipped = frame.attrs.get("skipped_files") or []
    validate_pool(frame, label_set=list(cfg.labels.names), max_text_length=d.max_text_length,
                  source=str(cfg.data_path))
    frame.attrs["seed_method"] = seed_method_for(cfg, frame)
    if frame.attrs["seed_method"] == "stratified":
        _check_stratified_labels(cfg, frame)
    if skipped:
        say(f"{cfg.data_path}: skipped {len(skipped)} unsupported entr{'y' if len(skipped) == 1 else 'ies'} "
            f"([data] skip_unsupported_files): {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}")
    return frame


def _load_data(cfg: CampaignConfig) -> pd.DataFrame:
    """``[data]`` as a frame. A file without a column named ``label`` (the default ``label_column``) is
    unlabelled text: people label the test set and the calibration slice too
    (:func:`integrations.sources.load_table_maybe_unlabelled`)."""
    d = cfg.data
    frame = load_table_maybe_unlabelled(
        cfg.data_path, id_col=d.id_column, text_col=d.text_column, label_col=d.label_column,
        label_optional=d.label_column == "label", encoding=d.encoding, delimiter=d.delimiter,
        skip_unsupported=d.skip_unsupported_files)
    if frame.attrs.get("unlabelled"):
        say(f"{cfg.data_path}: no {d.label_column!r} column: unlabelled text (people label the test set, the "
            f"calibration slice and the seed)")
    return frame


def seed_method_for(cfg: CampaignConfig, frame: pd.DataFrame) -> str:
    """The seed method for this data: the configured one, or — when ``seed_method`` was left at its
    default and the rows lack labels — one that needs none (keywords when given, else kmeans)."""
    s = cfg.splits
    n_known = int(frame["label"].notna().sum()) if "label" in frame else 0
    return default_seed_method(s.seed_method, "seed_method" in s.model_fields_set, n_known, len(frame),
                               bool(s.keywords))


def read_evaluation_file(cfg: CampaignConfig, path: Path, split: str) -> pd.DataFrame:
    """A labelled file named for the test set or the calibration slice, under the pool's data contract,
    with a known label on every row (raises InputError naming the file and row, writes nothing)."""
    d = cfg.data
    key = "test_path" if split == "test" else "calibration_path"
    frame = load_table(path, id_col=d.id_column, text_col=d.text_column, label_col=d.label_column,
                       encoding=d.encoding, delimiter=d.delimiter, skip_unsupported=d.skip_unsupported_files)
    validate_pool(frame, label_set=list(cfg.labels.names), max_text_length=d.max_text_length, source=str(path))
    missing = frame[frame["label"].isna()] if "label" in frame else frame
    if len(missing):
        r = missing.iloc[0]
        raise InputError(f"{path}: [splits] {key} must be labelled, but row {int(r['source_row'])} (id {r['id']!r}) "
                         f"has no label in column {d.label_column!r} ({len(missing)} row(s) in all)",
                         path=str(r["source_file"]), line=int(r["source_row"]), field=d.label_column)
    frame = frame.copy()
    frame["split"] = split
    return frame


def load_and_validate(c: Campaign) -> pd.DataFrame:
    """:func:`read_pool` for an opened campaign (kept for callers that have one)."""
    return read_pool(c.cfg)


def _check_stratified_labels(cfg: CampaignConfig, frame: pd.DataFrame) -> None:
    """A stratified seed draws from the pool's known labels: every row needs one.

    Why here and not in ``carve_splits``: only here do we know the file and the row
    each item came from, which is what a user needs to fix the data.
    """
    missing = frame[frame["label"].isna()]
    if missing.empty:
        return
    column = cfg.data.label_column
    where = ", ".join(f"{Path(str(r.source_file)).name} row {int(r.source_row)} (id {r.id!r})"
                      for r in missing.head(10).itertuples())
    more = f", ... ({len(missing)} rows in all)" if len(missing) > 10 else ""
    field = f"column {column!r}" if column else "no [data] label_column"
    raise InputError(
        f"{cfg.data_path}: splits.seed_method = \"stratified\" needs a known label on every row "
        f"({field}); without one: {where}{more}. Fill them in, or use seed_method = \"kmeans\" or \"keywords\"",
        path=str(missing.iloc[0]["source_file"]), line=int(missing.iloc[0]["source_row"]), field=column)


def _carve(cfg: CampaignConfig, frame: pd.DataFrame) -> pd.Series:
    s = cfg.splits
    method = frame.attrs.get("seed_method") or s.seed_method
    features = None
    if method == "kmeans":
        features = fit_featurizer(frame["text"], max_features=cfg.model.max_features,
                                  ngram_max=cfg.model.ngram_max).transform(frame["text"])
    try:
        return carve_splits(frame, test_size=0 if cfg.test_file else s.test_size,
                            calibration_size=0 if cfg.calibration_file else s.calibration_size,
                            seed_size=s.seed_size, seed_method=method, random_state=s.random_state,
                            features=features, keywords=s.keywords or None)
    except SplitError as err:  # name the data the numbers are about
        raise SplitError(f"{cfg.data_path} ({len(frame)} rows): {err}") from None


# Frames that passed preflight in this process, keyed by campaign and data path, so that the flow
# does not read and validate a large pool twice (a Prefect flow parameter would be serialised).
_prepared: dict[tuple[str, str], pd.DataFrame] = {}


def preflight(config: str | Path | CampaignConfig) -> tuple[CampaignConfig, pd.DataFrame]:
    """Everything set-up can check before it writes anything; returns the config and the carved frame.

    Raises the CLI's known errors (ConfigError, InputError, DataContractError, SplitError,
    EmbeddingsUnavailable, BackendError): the campaign folder is left exactly as it was —
    not even created — and no Prefect flow has started.
    """
    cfg = config if isinstance(config, CampaignConfig) else load_config(config)
    if uses_minilm(resolve_featurizer(cfg.model.featurizer)[0]):
        from labelloop.tasks.embeddings import require_minilm

        require_minilm()  # the install command, not a half-set-up campaign
    frame = read_pool(cfg)
    split = _carve(cfg, frame)
    frame["split"] = split
    attrs = {"seed_counts": split.attrs.get("seed_counts"), "seed_method": frame.attrs["seed_method"]}
    extra = [read_evaluation_file(cfg, p, name) for p, name in ((cfg.test_file, "test"),
                                                                (cfg.calibration_file, "calibration")) if p]
    if extra:
        frame = _with_evaluation_files(frame, extra)
    frame.attrs.update(attrs)
    _check_evaluation_budget(cfg, frame)
    if cfg.annotation.backend == "simulated":
        _check_simulated_can_answer(cfg, frame)
    if cfg.annotation.backend == "label_studio":
        _check_label_studio(cfg)
    _prepared[(cfg.name, str(cfg.data_path))] = frame
    return cfg, frame


def _with_evaluation_files(frame: pd.DataFrame, files: list[pd.DataFrame]) -> pd.DataFrame:
    """The pool plus the labelled test / calibration files; an id in two of them is an error (an item
    both evaluated on and queried would leak)."""
    seen = {str(i): "the data" for i in frame["id"]}
    for f in files:
        for r in f.itertuples():
            if str(r.id) in seen:
                raise InputError(f"{r.source_file} row {int(r.source_row)}: id {r.id!r} is also in {seen[str(r.id)]}; "
                                 f"an item is either evaluated on or queried, never both",
                                 path=str(r.source_file), line=int(r.source_row), field="id")
            seen[str(r.id)] = f"{r.source_file}"
    return pd.concat([frame, *files], ignore_index=True)


def people_labelled_evaluation(frame: pd.DataFrame) -> pd.DataFrame:
    """Test and calibration rows without a known label: people label them (evaluation tasks)."""
    is_eval = frame["split"].isin(["test", "calibration"])
    return frame[is_eval & (frame["label"].isna() if "label" in frame else True)]


def _check_simulated_can_answer(cfg: CampaignConfig, frame: pd.DataFrame) -> None:
    """The simulated annotators answer from known labels: a seed or evaluation item without one would
    stop the push half-way, after the ledger was written. Say so before anything is."""
    pushed = frame[frame["split"].isin(["seed", "test", "calibration"])]
    missing = pushed[pushed["label"].isna()] if "label" in pushed else pushed
    if len(missing):
        raise SplitError(
            f"{cfg.data_path}: the simulated annotators answer from known labels, but {len(missing)} seed/test/"
            f"calibration item(s) have none (e.g. id {str(missing.iloc[0]['id'])!r}); unlabelled text needs people: "
            f"[annotation] backend = \"label_studio\" or \"replay\" (or `labelloop demo --unlabelled`)")


def _check_evaluation_budget(cfg: CampaignConfig, frame: pd.DataFrame) -> None:
    budget = cfg.budget.evaluation_labels
    n = len(people_labelled_evaluation(frame))
    if budget is not None and n > budget:
        raise SplitError(
            f"{cfg.data_path}: the test set and calibration slice need {n} items labelled by people, more than "
            f"[budget] evaluation_labels ({budget}); raise it, lower splits.test_size / splits.calibration_size, "
            f"or name labelled files ([splits] test_path, calibration_path)")


def _check_label_studio(cfg: CampaignConfig) -> None:
    """Reach Label Studio (token, server, project) before the first write: an unreachable server
    then leaves the campaign folder as it was instead of a ledger without its seed pushed."""
    try:
        backend = make_backend(Campaign(cfg=cfg, ledger=None))  # type: ignore[arg-type] # LS needs no ledger
        backend.project_id  # noqa: B018 - finds or creates the project: one round trip with retries
        tasks = backend.existing_tasks()
    except Exception as err:
        if err.args and isinstance(err.args[0], str):
            err.args = (err.args[0] + " (set-up checked this before writing anything: the campaign folder is "
                        "unchanged)", *err.args[1:])
        raise
    _refuse_someone_elses_project(cfg, backend.project_title, tasks)


def _refuse_someone_elses_project(cfg: CampaignConfig, title: str, tasks: dict[str, str]) -> None:
    """Refuse a new campaign whose Label Studio project already holds labelloop tasks.

    Why: the project is found by its title (the campaign's name). A second campaign with the same
    name (a copied config) would otherwise adopt the first one's tasks as its own seed ("pushed",
    though nothing was), train on answers nobody gave it and push its batches into the other
    team's project. A set-up that was interrupted after its first write is not new: its ledger
    holds its items, and it resumes.
    """
    if not tasks or _ledger_holds_items(cfg):
        return
    raise ConfigError(
        f"Label Studio project {title!r} already holds {len(tasks)} labelloop task(s), and campaign "
        f"{cfg.name!r} is new (its ledger has no record of them): another campaign uses this project. Give this "
        f"campaign another `name` (or [annotation.label_studio] project_title), or point [ledger] at the ledger of "
        f"the campaign that owns the project; nothing was written")


def _ledger_holds_items(cfg: CampaignConfig) -> bool:
    """Whether the campaign's ledger exists and holds its items (a set-up that already wrote)."""
    path = sqlite_file(cfg.ledger_url)
    if path is not None and not path.is_file():
        return False
    try:
        led = Ledger(cfg.ledger_url, cfg.name, create=False)  # only reads: a server ledger is not touched
    except LedgerError as err:
        if "holds no ledger tables" in str(err):
            return False  # a new database: nothing written yet
        raise  # unreachable, newer or unreadable: say that, not "another campaign uses this project"
    try:
        return led.n_items() > 0
    finally:
        led.dispose()


def _looks_set_up(cfg: CampaignConfig) -> bool:
    return (cfg.workdir_path / SETUP_MARKER).is_file()


SETUP_MARKER = ".labelloop-setup.json"


def _check_not_lost(c: Campaign) -> None:
    """Refuse to set up again a campaign whose folder says it was set up but whose ledger doesn't know it.

    Why: a ledger that was deleted (SQLite file removed, database dropped or swapped) would otherwise be
    re-created empty and the campaign would silently start over (round 1 again, new MLflow runs, tasks
    pushed again), losing the record of what was asked and answered.
    """
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
    s = c.cfg.splits
    frame = _prepared.pop((c.cfg.name, str(c.cfg.data_path)), None)
    if frame is None:
        _, frame = preflight(c.cfg)
        _prepared.pop((c.cfg.name, str(c.cfg.data_path)), None)
    try:
        return _write_setup(c, frame)
    except Exception as err:
        _say_what_was_kept(c, err)
        raise


def _say_what_was_kept(c: Campaign, err: Exception) -> None:
    """Append to a failure after the first write what set-up kept and that re-running resumes.

    Why in the message itself: the user reads one line; "Label Studio went away" alone
    would suggest nothing happened, while the ledger now holds the items and seed.
    """
    try:
        n_items = c.ledger.n_items()
    except Exception:  # noqa: BLE001 - the ledger itself may be what failed
        return
    if not n_items:
        return
    kept = (f" Set-up stopped after writing: the ledger ({c.ledger.safe_url}) keeps {n_items} items, their splits "
            f"and the seed queries, and {c.featurizer_path.relative_to(c.workdir)}; the campaign is not marked set "
            f"up. Re-run `labelloop setup` to resume (nothing is added twice; only unpushed seed items are pushed).")
    if err.args and isinstance(err.args[0], str) and "Set-up stopped after writing" not in err.args[0]:
        err.args = (err.args[0] + kept, *err.args[1:])


def _write_setup(c: Campaign, frame: pd.DataFrame) -> bool:
    s = c.cfg.splits
    method = frame.attrs.get("seed_method") or s.seed_method
    split = frame["split"]
    train_side = frame[frame["split"].isin(["pool", "seed"])]
    kind, why = resolve_featurizer(c.cfg.model.featurizer)
    kept = c.ledger.get_meta(FEATURIZER_META)
    if c.cfg.model.featurizer == "auto" and kept:  # a resumed set-up keeps what it chose the first time
        kind, why = kept, "auto, as chosen when set-up started"
    say(f"features: {kind}" + (f" ({why})" if why else ""))
    if uses_minilm(kind):
        say(f"embedding {len(train_side)} pool texts with all-MiniLM-L6-v2 (once; cached by text hash) ...")
    c.save_featurizer(make_featurizer(kind, train_side["text"].tolist(), max_features=c.cfg.model.max_features,
                                      ngram_max=c.cfg.model.ngram_max, reporter=logs))
    c.ledger.set_meta(FEATURIZER_META, kind)
    with progress("ingesting", len(frame), "items") as bar:
        c.ledger.add_items(frame, progress=bar.advance)
    seed_ids = frame.loc[frame["split"] == "seed", "id"].astype(str).tolist()
    if method == "keywords":
        counts = frame.attrs.get("seed_counts") or split.attrs["seed_counts"]
        say("seed by keywords: " + ", ".join(f"{lab} {k}" for lab, k in counts.items()) + f" of {len(seed_ids)}"
            + ("; a label whose rules matched nothing has no seed example: add keywords"
               if 0 in [k for lab, k in counts.items() if lab in s.keywords] else ""))
    for arm in c.cfg.arms:
        c.ledger.add_queries(arm, 0, [{"item_id": i, "strategy": f"seed-{method}", "reason": "seed",
                                       "score": None, "model_version": None} for i in seed_ids])
    evaluation = people_labelled_evaluation(frame)
    if len(evaluation):  # pushed with the seed, unmarked; the pseudo-arm keeps them out of every arm's budget
        c.ledger.add_queries(EVAL_ARM, 0, [{"item_id": str(i), "strategy": f"evaluation-{sp}", "reason": "evaluation",
                                            "score": None, "model_version": None}
                                           for i, sp in zip(evaluation["id"], evaluation["split"])])
        say(f"{len(evaluation)} test/calibration items have no known label: pushed with the seed for people to "
            f"label (evaluation budget {c.cfg.budget.evaluation_labels or len(evaluation)}); rounds evaluate on the "
            f"trusted ones ({s.min_test_labels} test items before a round judges its model)")
    if method != s.seed_method:
        say(f"seed by {method}: the data has no labels to stratify on ([splits] seed_method to choose)")
    push_pending(c, 0, {})
    c.ledger.set_meta("setup_done", "1")
    _write_marker(c)  # after the ledger says so: a set-up killed before this point simply runs again
    say(f"campaign {c.name!r}: {len(frame)} items ingested "
          f"({(frame['split'] == 'pool').sum()} pool, {len(seed_ids)} seed, {(frame['split'] == 'test').sum()} test, "
          f"{(frame['split'] == 'calibration').sum()} calibration); seed pushed to the {c.backend.name} backend")
    return True


def setup_flow(config: str) -> dict:
    """`labelloop setup`: :func:`preflight` (unless the folder says it is set up already), then the flow.

    Why not inside the flow: starting Prefect and opening the ledger both write (the
    ledger file, Prefect's state); a bad input must be stopped before either.
    """
    cfg = load_config(config)
    if not _looks_set_up(cfg):
        preflight(cfg)
    return setup_campaign_flow(config)


@flow(name="labelloop-setup", log_prints=True)
def setup_campaign_flow(config: str) -> dict:
    c = open_campaign(config)
    did = ensure_setup(c)
    if not did:
        get_run_logger().info("campaign %s is already set up (%d items)", c.name, c.ledger.n_items())
    return {"campaign": c.name, "items": c.ledger.n_items(), "new": did}
