"""Open a campaign's resources (ledger, featuriser, annotation backend, MLflow).

Why one place: every flow (set-up, round, reopen, drift check, status) needs
the same objects built the same way from the config, and secrets (Label
Studio token, database password) must be read from the environment or a
Prefect Secret block in exactly one spot, never from the config file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from labelloop.flows.config import CampaignConfig, ConfigError, load_config
from labelloop.integrations.artifacts import load_pickled
from labelloop.integrations.backend import AnnotationBackend
from labelloop.integrations.ledger import Ledger, sqlite_file

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
logging.getLogger("great_expectations").setLevel(logging.WARNING)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


FEATURIZER_META = "featurizer"  # ledger meta: the concrete features set-up chose


@dataclass
class Campaign:
    cfg: CampaignConfig
    ledger: Ledger
    _backend: AnnotationBackend | None = field(default=None, repr=False)
    _tracker: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def workdir(self) -> Path:
        return self.cfg.workdir_path

    @property
    def labels(self) -> list[str]:
        return list(self.cfg.labels.names)

    @property
    def featurizer_path(self) -> Path:
        return self.workdir / "models" / "featurizer.joblib"

    def featurizer(self) -> Any:
        if not self.featurizer_path.exists():
            raise FileNotFoundError(
                f"campaign {self.name!r} has no featuriser at {self.featurizer_path}; run `labelloop setup` first"
            )
        st = self.featurizer_path.stat()
        key = (str(self.featurizer_path.resolve()), st.st_mtime_ns, st.st_size)
        if _FEATURIZERS.get("key") != key:
            import joblib  # here, not at the top: `status` and the other read-only commands never load it

            vec = load_pickled(lambda: joblib.load(self.featurizer_path))
            if hasattr(vec, "reporter"):  # MiniLM: says when it loads its model, shows embedding progress
                from labelloop.flows import logs

                vec.reporter = logs
            _FEATURIZERS.update(key=key, vec=vec)
        return _FEATURIZERS["vec"]

    @property
    def featurizer_kind(self) -> str:
        """The features this campaign uses: what set-up chose (``auto`` resolved), kept in the ledger.

        Why not the config: ``auto`` depends on what is installed, and a campaign must not change
        its features because the MiniLM extra was installed (or removed) after set-up. A campaign
        set up before the ledger kept it: an explicit config name, else the saved featuriser's kind.
        """
        kept = self.ledger.get_meta(FEATURIZER_META)
        if kept:
            return str(kept)
        if self.cfg.model.featurizer != "auto":
            return self.cfg.model.featurizer
        if self.featurizer_path.exists():
            from labelloop.tasks.train import featurizer_kind

            return featurizer_kind(self.featurizer())
        from labelloop.tasks.features import resolve_featurizer

        return resolve_featurizer("auto")[0]  # not set up yet: what set-up would choose now

    def featurizer_note(self) -> str | None:
        """A line for the round when ``[model] featurizer`` was edited after set-up: the edit does nothing,
        and a silent no-op would let the user believe the campaign switched features."""
        setting, kind = self.cfg.model.featurizer, self.featurizer_kind
        if setting in ("auto", kind):
            return None
        return (f"[model] featurizer = {setting!r}, but this campaign was set up with {kind!r} and keeps it: "
                f"features are fixed at set-up (start a new campaign to change them)")

    def save_featurizer(self, vec: Any) -> None:
        self.featurizer_path.parent.mkdir(parents=True, exist_ok=True)
        import joblib

        tmp = self.featurizer_path.with_suffix(".tmp")
        joblib.dump(vec, tmp)
        os.replace(tmp, self.featurizer_path)

    @property
    def backend(self) -> AnnotationBackend:
        if self._backend is None:
            self._backend = make_backend(self)
        return self._backend

    @property
    def tracker(self) -> Any:
        if self._tracker is None:
            from labelloop.integrations.tracking import Tracker

            self._tracker = Tracker(self.cfg.tracking_uri, self.cfg.experiment_name, self.cfg.name)
        return self._tracker


def open_campaign(config: str | Path | CampaignConfig) -> Campaign:
    cfg = config if isinstance(config, CampaignConfig) else load_config(config)
    if cfg.annotation.backend == "replay":
        replay_answers(cfg)  # a bad replay file stops every command before anything is written
    cfg.workdir_path.mkdir(parents=True, exist_ok=True)
    return Campaign(cfg=cfg, ledger=Ledger(cfg.ledger_url, cfg.name))


class NotSetUpError(ConfigError):
    """A command that only reads a campaign was pointed at one that was never set up (exit 2)."""


def require_ledger(cfg: CampaignConfig) -> None:
    """Raise :class:`NotSetUpError` when the campaign's SQLite ledger does not exist.

    Why: ``status``, ``doctor`` and ``export`` only read; opening the ledger would create an empty
    one (and the campaign folder) for a typo'd or never set-up config, and then report an empty
    campaign as "ready" or "consistent". Only a SQLite file is checked: a server ledger (PostgreSQL)
    is shared by campaigns and exists before any of them is set up.
    """
    path = sqlite_file(cfg.ledger_url)
    if path is not None and not path.is_file():
        raise NotSetUpError(f"campaign {cfg.name!r} has no ledger at {path}; run `labelloop setup` first")


def open_set_up_campaign(config: str | Path | CampaignConfig) -> Campaign:
    """:func:`open_campaign` for commands that only read: never creates a ledger (see :func:`require_ledger`)."""
    cfg = config if isinstance(config, CampaignConfig) else load_config(config)
    require_ledger(cfg)
    return open_campaign(cfg)


_REPLAY_CACHE: dict[tuple, Any] = {}


def replay_answers(cfg: CampaignConfig) -> Any:
    """The checked answers of ``[annotation.replay]`` (a frame ``item_id, annotator, label``).

    Read once per process and file version: every command opens the campaign, and a
    recorded crowd file can hold tens of thousands of answers. Raises ``BackendError``
    (one line naming the file and column/row) for a missing or bad file.
    """
    from labelloop.integrations.replay import read_answers

    r = cfg.annotation.replay
    path = r.file(cfg.base_dir)
    assert path is not None  # the config requires it for backend = "replay"
    try:
        st = path.stat()
        sig: tuple = (str(path), st.st_size, st.st_mtime_ns)
    except OSError:
        sig = (str(path), None, None)
    key = sig + (r.item_column, r.annotator_column, r.label_column, tuple(cfg.labels.names))
    if key not in _REPLAY_CACHE:
        _REPLAY_CACHE.clear()
        _REPLAY_CACHE[key] = read_answers(path, item_column=r.item_column, annotator_column=r.annotator_column,
                                          label_column=r.label_column, labels=cfg.labels.names)
    return _REPLAY_CACHE[key]


# The last featuriser loaded, by file (path, mtime, size): a warm process (a worker running
# round after round) unpickles the 50k-term vocabulary once, not every round (~1 s each,
# issue 18). Safe to share: the models wrap it in a FrozenEstimator, nothing refits it, and
# a re-fitted featuriser is a new file (save_featurizer replaces it), so a new key.
_FEATURIZERS: dict[str, Any] = {}


class LedgerKnownLabels(Mapping[str, str]):
    """The known labels of a campaign's items, for the simulated annotators, read again from the
    ledger when an item is missing and the ledger has gained items since the last read.

    Why not a snapshot: one flow run can build the backend and then add items: stream mode's first
    run sets the campaign up (pushing the seed) and then ingests the arrivals it routes to people; a
    snapshot taken at set-up would not know them and the push would fail. Hits cost nothing; a miss
    costs one count query.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._n_items = -1
        self._labels: dict[str, str] = {}
        self._reload()

    def _reload(self) -> bool:
        n = self.ledger.n_items()
        if n == self._n_items:
            return False
        known = self.ledger.items_frame()
        self._labels = {r.item_id: r.known_label for r in known.itertuples() if isinstance(r.known_label, str)}
        self._n_items = n
        return True

    def __getitem__(self, item_id: str) -> str:
        if item_id not in self._labels:
            self._reload()
        return self._labels[item_id]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels or (self._reload() and item_id in self._labels)

    def __iter__(self) -> Iterator[str]:
        self._reload()
        return iter(self._labels)

    def __len__(self) -> int:
        self._reload()
        return len(self._labels)


def make_backend(c: Campaign) -> AnnotationBackend:
    ann = c.cfg.annotation
    if ann.backend == "replay":
        from labelloop.integrations.replay import ReplayBackend

        return ReplayBackend(c.workdir / "replay_backend.json", replay_answers(c.cfg), max_per_item=ann.overlap,
                             seed=ann.replay.seed)
    if ann.backend == "simulated":
        from labelloop.integrations.simulated import SimulatedBackend

        return SimulatedBackend(
            c.workdir / "simulated_backend.json",
            true_labels=LedgerKnownLabels(c.ledger),
            annotators=[(a.name, a.accuracy) for a in ann.simulated.annotators],
            labels=c.labels,
            overlap=ann.overlap,
            seed=ann.simulated.seed,
        )
    from labelloop.integrations.label_studio import LabelStudioBackend, resolve_api_key

    ls = ann.label_studio
    explicit = os.environ.get(ls.api_key_env)
    if not explicit and not ls.secret_block:
        raise ConfigError(
            f"no Label Studio API key: set the environment variable {ls.api_key_env} "
            f"(for the local server: `export {ls.api_key_env}=$(infra/label_studio.sh token)`) "
            "or name a Prefect Secret block in annotation.label_studio.secret_block"
        )
    key = resolve_api_key(explicit=explicit, secret_block=ls.secret_block)
    return LabelStudioBackend(
        url=ls.url,
        api_key=key,
        project_title=ls.project_title or f"labelloop {c.name}",
        labels=c.labels,
        overlap=ann.overlap,
        instructions=ls.instructions,
    )
