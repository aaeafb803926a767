"""Campaign configuration: one TOML file describes one active-learning campaign.

Why pydantic with ``extra="forbid"``: a typo in a config key (``batchsize``)
must stop the campaign before it spends a single label, not be silently
ignored. Every error names the key path and what was expected.
"""

from __future__ import annotations

import codecs
import os
import tomllib
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labelloop.tasks.errors import LabelloopError
from labelloop.tasks.features import FEATURIZER_SETTINGS
from labelloop.tasks.strategies import STRATEGIES


class ConfigError(LabelloopError, ValueError):
    """The campaign config is missing, unreadable or invalid."""


def is_text_encoding(name: str) -> bool:
    """A codec Python knows that decodes bytes to text (``rot13`` and ``base64`` are codecs, not text)."""
    try:
        return codecs.lookup(name)._is_text_encoding  # type: ignore[attr-defined]
    except LookupError:
        return False


class _Strict(BaseModel):
    # strict: `batch_size = true` or `"15"` is a typo to report, not a value to coerce (TOML has real
    # booleans, integers and floats); no inf/nan: `C = inf` would train nothing useful.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class DataConfig(_Strict):
    path: str = Field(description="CSV / Parquet / JSONL file or a folder of them; relative to the config file")
    id_column: str | None = Field(default="id", description='Id column; "" derives ids from a hash of the text')
    text_column: str = Field(default="text", min_length=1)
    label_column: str | None = Field(
        default="label",
        description="Known labels (used for the frozen test / calibration splits and by simulated annotators)",
    )
    max_text_length: Annotated[int, Field(gt=0)] = 10_000
    encoding: str = Field(
        default="utf-8",
        description="Text encoding of CSV/TSV/JSONL files (utf-8 also accepts a UTF-8 BOM; e.g. utf-16, cp1252)")
    delimiter: str | None = Field(
        default=None,
        description="CSV delimiter: ',', ';', '\\t' (or 'tab') or '|'; unset: sniffed from each file's header")
    skip_unsupported_files: bool = Field(
        default=False,
        description="path is a folder: skip files of other types (listed on set-up) instead of stopping")

    @field_validator("id_column")
    @classmethod
    def _blank_id_is_hash(cls, v: str | None) -> str | None:
        return v or None  # TOML has no null: "" is how a config says "no id column"

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, v: str) -> str:
        if not is_text_encoding(v):
            raise ValueError(f"unknown encoding {v!r} (e.g. 'utf-8', 'utf-16', 'cp1252', 'latin-1')")
        return v

    @field_validator("delimiter")
    @classmethod
    def _check_delimiter(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(v.lower(), v)
        if v not in DELIMITERS:
            raise ValueError(f"unsupported delimiter {v!r}; one of ',', ';', '\\t' (tab), '|'")
        return v


DELIMITERS = (",", ";", "\t", "|")  # the ones integrations.sources sniffs between (tests check they agree)

# The longest label every store keeps exactly: the ledger's label columns are String(256) (SQLite
# ignores the length, PostgreSQL refuses longer values); MLflow only sees labels inside metric
# names, which integrations.tracking maps to safe names; Label Studio keeps any length.
LABEL_MAX_CHARS = 256


def label_problems(names: list[str]) -> list[str]:
    """Why some label names cannot work end to end (empty list: all fine).

    Checked at config time, before anything is written: a label that a store
    truncates, rejects or silently rewrites would fail a round later (or, worse,
    split one class in two). Allowed: any printable text up to ``LABEL_MAX_CHARS``
    characters — slashes, ``&``, ``<``, ``;``, ``..``, accents and emoji included.
    Refused: control characters and line breaks (XML and PostgreSQL refuse some, and a
    label you cannot see cannot be checked), surrounding whitespace and non-NFC text
    (labels read from data are NFC-normalised and stripped, so they would never match).
    """
    problems = []
    for i, name in enumerate(names, start=1):
        where = f"label {i} ({name[:40]!r}{'...' if len(name) > 40 else ''})"
        if not name.strip():
            problems.append(f"label {i} is empty")
            continue
        if len(name) > LABEL_MAX_CHARS:
            problems.append(f"{where} is {len(name)} characters long; at most {LABEL_MAX_CHARS} fit every store "
                            f"(the ledger's label columns)")
        bad = sorted({c for c in name if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")})
        if bad:
            problems.append(f"{where} contains control characters or line breaks "
                            f"({', '.join(f'U+{ord(c):04X}' for c in bad)})")
        if name != name.strip():
            problems.append(f"{where} has leading or trailing whitespace, which labels read from data lose")
        if unicodedata.normalize("NFC", name) != name:
            problems.append(f"{where} is not in Unicode NFC form; write it as "
                            f"{unicodedata.normalize('NFC', name)!r} (labels read from data are NFC)")
    folded: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        key = unicodedata.normalize("NFC", name).strip().casefold()
        if key in folded and names[folded[key] - 1] != name:
            problems.append(f"label {i} ({name!r}) differs from label {folded[key]} "
                            f"({names[folded[key] - 1]!r}) only in case or Unicode form")
        folded.setdefault(key, i)
    return problems


class LabelVersionConfig(_Strict):
    """An earlier version of the label set and how its labels map to the next version."""

    version: Annotated[int, Field(ge=1)]
    names: list[str]
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description='old label -> label of the next version; "" (or a label that no longer exists and is not '
        "mapped) means answers with it are flagged for re-labelling",
    )


class LabelsConfig(_Strict):
    names: list[str]
    version: Annotated[int, Field(ge=1)] = 1
    previous: list[LabelVersionConfig] = Field(
        default_factory=list,
        description="Earlier versions of the label set (rename / merge / split history); see tasks/labels.py",
    )

    @field_validator("names")
    @classmethod
    def _check_names(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError("a classification campaign needs at least 2 labels")
        empty = [i for i, n in enumerate(v) if not n.strip()]
        if empty:
            raise ValueError(f"label names must be non-empty (empty at positions {empty})")
        dupes = sorted({n for n in v if v.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate label names: {dupes}")
        problems = label_problems(v)
        if problems:
            raise ValueError("; ".join(problems))
        return v


class SplitsConfig(_Strict):
    test_size: Annotated[int, Field(gt=0)] = 500
    calibration_size: Annotated[int, Field(gt=0)] = 300
    seed_size: Annotated[int, Field(gt=0)] = 50
    seed_method: Literal["stratified", "kmeans", "keywords"] = "stratified"
    keywords: dict[str, list[str]] = Field(
        default_factory=dict,
        description="seed_method = 'keywords': label -> tell-tale words or phrases (whole-word, case-insensitive)",
    )
    random_state: Annotated[int, Field(ge=0)] = 0
    test_path: str | None = Field(
        default=None, description="A labelled file that is the frozen test set (same data contract as [data]); "
        "unset: drawn at random from the data, labelled by people when the data has too few known labels")
    calibration_path: str | None = Field(
        default=None, description="A labelled file that is the calibration slice (same data contract as [data])")
    min_test_labels: Annotated[int, Field(ge=1)] = Field(
        default=100, description="Below this many trusted test items a round says so and skips the champion "
        "alias, health checks and stopping on a target or a marginal gain (it still queries)")
    min_calibration_labels: Annotated[int, Field(ge=1)] = Field(
        default=50, description="Below this many trusted calibration items the calibration gate is not judged")


def _one_of(what: str, value: str, names: tuple[str, ...]) -> str:
    """``value`` when it is one of ``names`` (a registry's names), else the error that lists them."""
    if value not in names:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(names)}")
    return value


class ModelConfig(_Strict):
    featurizer: str = Field(
        default="auto", description="auto (default): tfidf+minilm when the optional MiniLM extra is installed, "
        "else tfidf, chosen once at set-up; tfidf: word 1-2-grams; minilm: frozen all-MiniLM-L6-v2 sentence "
        "embeddings; tfidf+minilm: both side by side (minilm and tfidf+minilm need the MiniLM extra)")
    classifier: Literal["logistic_regression"] = "logistic_regression"
    C: Annotated[float, Field(gt=0)] = 10.0
    max_features: Annotated[int, Field(gt=0)] = 50_000
    ngram_max: Annotated[int, Field(ge=1, le=3)] = 2
    self_training: bool = Field(
        default=False, description="Ablation (issue 16): also train on pool items whose calibrated confidence "
                                   "clears self_training_threshold (pseudo-labels: model only, never exported)")
    self_training_threshold: Annotated[float, Field(gt=0.5, le=1.0)] = 0.95

    @field_validator("featurizer")
    @classmethod
    def _check_featurizer(cls, v: str) -> str:
        return _one_of("featurizer", v, FEATURIZER_SETTINGS)


STRATEGY_NAMES = STRATEGIES  # one list, owned by the strategies themselves (tasks/query.py)


class QueryConfig(_Strict):
    strategy: str = "margin"
    batch_size: Annotated[int, Field(gt=0)] = 50
    random_share: Annotated[float, Field(ge=0.0, le=0.5)] = 0.10
    random_ahead_share: Annotated[float, Field(ge=0.0, le=0.5)] = Field(
        default=0.5, description="Random share of the active batch after a round in which the parallel random "
                                 "arm was ahead (random_ahead health check fired); = random_share turns it off")
    class_quota: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    near_duplicate_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    random_arm: bool = Field(
        default=True,
        description="Run a parallel random arm with the same budget so every round measures AL against random",
    )

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, v: str) -> str:
        return _one_of("strategy", v, STRATEGY_NAMES)


class BudgetConfig(_Strict):
    max_labels: Annotated[int, Field(gt=0)] = 500
    max_rounds: Annotated[int, Field(gt=0)] = 50
    target_macro_f1: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    cost_per_label: Annotated[float, Field(ge=0.0)] = 0.0
    min_gain_per_label: Annotated[float, Field(gt=0.0)] | None = Field(
        default=None, description="Stop when macro-F1 rises less than this per label over `stop_window` rounds")
    stop_window: Annotated[int, Field(ge=1, le=20)] = 3
    stability_kappa: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        default=None, description="Stop when successive models agree (Cohen kappa) on a fixed stop set")
    stop_set_size: Annotated[int, Field(ge=50)] = 500
    evaluation_labels: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Items of the test set and calibration slice that people may be asked to "
        "label (their own budget, apart from the arms' max_labels); unset: as many as the splits need")


class GatesConfig(_Strict):
    calibration_ece: Annotated[float, Field(gt=0.0, le=1.0)] = 0.10
    agreement_mode: Literal["relative", "absolute"] = Field(
        default="relative",
        description="relative: a batch is quarantined when its Krippendorff alpha falls agreement_drop below the "
        "campaign's other batches (real crowds reach alpha 0.2-0.6 with correct consensus labels); absolute: "
        "below agreement_alpha")
    agreement_alpha: Annotated[float, Field(ge=-1.0, le=1.0)] = Field(
        default=0.67, description="agreement_mode = absolute: batches below this alpha are quarantined")
    agreement_drop: Annotated[float, Field(gt=0.0, le=2.0)] = Field(
        default=0.25, description="agreement_mode = relative: how far below the campaign's alpha a batch may fall")
    agreement_min_items: Annotated[int, Field(ge=2)] = Field(
        default=10, description="agreement_mode = relative: items with >= 2 answers before a batch is judged")


class SimAnnotator(_Strict):
    name: str
    accuracy: Annotated[float, Field(ge=0.0, le=1.0)]


class SimulatedConfig(_Strict):
    annotators: list[SimAnnotator] = Field(
        default_factory=lambda: [
            SimAnnotator(name="ann-1", accuracy=0.95),
            SimAnnotator(name="ann-2", accuracy=0.9),
            SimAnnotator(name="ann-3", accuracy=0.85),
        ]
    )
    seed: int = 0


class LabelStudioConfig(_Strict):
    url: str = "http://127.0.0.1:8089"
    api_key_env: str = Field(
        default="LABEL_STUDIO_API_KEY",
        description="Name of the environment variable holding the token (the token itself never goes in the file)",
    )
    secret_block: str | None = Field(default=None, description="Prefect Secret block holding the token")
    project_title: str | None = None
    instructions: str = ""
    simulate_annotators: bool = Field(
        default=False, description="Demo/tests: simulated annotators submit through real Label Studio users"
    )


class ReplayConfig(_Strict):
    """Recorded answers replayed as the annotators (integrations/replay.py): rehearse a campaign on
    a team's own labelling history, or test the trust policy on a real crowd."""

    path: str | None = Field(
        default=None, description="CSV or Parquet, long format (one row per answer); relative to the config file")
    item_column: str = Field(default="item_id", description="Column with the item id (the [data] ids)")
    annotator_column: str = "annotator_id"
    label_column: str = "label"
    seed: int = Field(default=0, description="Fixes which recorded workers answer an item (a stable hash order)")

    @field_validator("item_column", "annotator_column", "label_column")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a column")
        return v

    def file(self, base_dir: Path) -> Path | None:
        """``path`` resolved against the config file's folder (None when not set)."""
        if not self.path:
            return None
        p = Path(self.path)
        return (p if p.is_absolute() else base_dir / p).resolve()


class AnnotationConfig(_Strict):
    backend: Literal["simulated", "label_studio", "replay"] = "simulated"
    overlap: Annotated[int, Field(ge=1, le=20)] = 3
    max_overlap: Annotated[int, Field(ge=1, le=20)] = Field(
        default=5, description="Adaptive redundancy: an answered item that is not trusted yet gets one more "
        "annotator at a time up to this many answers, then goes to adjudication (>= overlap)")
    extra_answer_rounds: Annotated[int, Field(ge=1, le=100)] = Field(
        default=2, description="An extra answer asked for (max_overlap) that has not come after this many rounds "
        "is given up: the item is decided on the answers it has, and adjudication settles it if still unsure")
    simulated: SimulatedConfig = Field(default_factory=SimulatedConfig)
    label_studio: LabelStudioConfig = Field(default_factory=LabelStudioConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)

    @model_validator(mode="after")
    def _replay_needs_a_file(self) -> "AnnotationConfig":
        if self.backend == "replay" and not self.replay.path:
            raise ValueError('backend = "replay" needs [annotation.replay] path (the recorded answers file)')
        return self


class LedgerConfig(_Strict):
    url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite file in the campaign folder")
    url_env: str | None = Field(default=None, description="Environment variable holding the URL (with a password)")


class MlflowConfig(_Strict):
    tracking_uri: str | None = Field(default=None, description="Default: SQLite file in the campaign folder")
    experiment: str | None = None
    register_model: bool = True



# ----- operations: schedules, drift watch, one round at a time (issue 6) --------------------------
def _check_cron(v: str | None) -> str | None:
    if v is None or not v.strip():
        return None
    v = " ".join(v.split())
    try:
        from datetime import datetime

        from cronsim import CronSim, CronSimError
    except ImportError:  # pragma: no cover - cronsim ships with prefect
        return v
    try:
        CronSim(v, datetime(2024, 1, 1))
    except CronSimError as err:
        raise ValueError(f"invalid cron expression {v!r}: {err}") from None
    return v


class ScheduleConfig(_Strict):
    round_cron: str | None = Field(
        default="0 6 * * 1-5", description="When scheduled rounds run (cron); empty: no round schedule")
    round_interval_seconds: Annotated[int, Field(ge=5)] | None = Field(
        default=None, description="Instead of round_cron: run a round every N seconds (demos, tests)")
    drift_cron: str | None = Field(
        default="0 * * * *", description="When the drift check looks at new arrivals (cron); empty: never")
    drift_interval_seconds: Annotated[int, Field(ge=5)] | None = None
    timezone: str = "UTC"
    batch_trigger: bool | None = Field(
        default=None, description="`labelloop serve`: start a round as soon as the open batch is answered "
                                  "([run] batch_ready_share), from Label Studio webhooks and a polling check; "
                                  "unset: on with the label_studio backend (the others answer at once, "
                                  "where `labelloop run` is the way to go round after round)")
    batch_poll_seconds: Annotated[int, Field(ge=5)] = Field(
        default=30, description="How often the polling fallback checks whether the open batch is answered")
    webhooks: bool = Field(
        default=True, description="Register a Label Studio webhook (false: the polling check alone)")
    webhook_host: str = Field(default="127.0.0.1", description="Address the webhook receiver listens on")
    webhook_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=0, description="Port of the webhook receiver; 0: a free port")
    webhook_url: str | None = Field(
        default=None, description="The receiver's address as Label Studio reaches it (default "
                                  "http://webhook_host:port); the campaign's path is appended")
    webhook_secret_env: str | None = Field(
        default="LABELLOOP_WEBHOOK_SECRET", description="Environment variable holding the webhook receiver's "
        "shared secret; when it is not set labelloop generates one and keeps it in the campaign folder "
        "(.labelloop-webhook-secret, mode 600). Calls without it get 401")

    @field_validator("round_cron", "drift_cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return _check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')") from None
        return v


class DriftConfig(_Strict):
    arrivals: str | None = Field(
        default=None, description="File or folder of newly arrived unlabelled data; relative to the config file")
    reference_size: Annotated[int, Field(ge=50)] = 2000
    min_new_items: Annotated[int, Field(ge=1)] = 30
    domain_auc: Annotated[float, Field(gt=0.5, le=1.0)] = 0.75
    confidence_psi: Annotated[float, Field(gt=0.0)] = 0.25
    label_shift: Annotated[float, Field(gt=0.0, le=1.0)] = 0.20
    oov_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.20
    min_signals: Annotated[int, Field(ge=1, le=4)] = Field(
        default=1, description="How many of the four statistics must reach their threshold to call drift")
    reopen_random_share: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.30, description="Random/diversity share of each batch for the rounds after a drift reopen")
    reopen_rounds: Annotated[int, Field(ge=0)] = 2
    refit_featurizer: bool = Field(
        default=True, description="Refit the TF-IDF vocabulary on reopen so the new items' words count")


class LockConfig(_Strict):
    backend: Literal["ledger", "prefect", "both"] = Field(
        default="ledger",
        description="ledger: a lock row in the ledger (no server needed); prefect: a global concurrency limit")
    on_busy: Literal["wait", "exit"] = "wait"
    timeout_seconds: Annotated[float, Field(ge=0)] = 6 * 3600
    lease_seconds: Annotated[float, Field(ge=10)] = 300


class RunConfig(_Strict):
    """How rounds wait for people (``labelloop round`` / ``run``)."""

    batch_ready_share: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.9, description="A round trains once this share of the open batch's items has its `overlap` "
        "answers; before that it waits (exit 3)")
    poll_interval_seconds: Annotated[float, Field(gt=0.0)] = Field(
        default=30.0, description="`labelloop run`: how often a waiting campaign asks the backend again")
    wait_timeout_seconds: Annotated[float, Field(ge=0.0)] = Field(
        default=3600.0, description="`labelloop run`: give up waiting after this long (exit 3; run it again later)")


class StreamConfig(_Strict):
    """Stream mode (``labelloop stream``, flows/stream.py, tasks/stream.py): arriving texts are labelled by
    the champion model when it is sure enough, by people otherwise."""

    arrivals: str | None = Field(
        default=None, description="Folder (or file) new texts are dropped into; relative to this file. "
        "`labelloop stream CONFIG --arrivals DIR` overrides it; the served deployment needs it")
    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.9, description="An arrival whose calibrated confidence reaches this is labelled automatically")
    audit_share: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.1, description="Share of automatic labels also sent to people, to measure their precision")
    daily_budget: Annotated[int, Field(ge=0)] = Field(
        default=200, description="Arrivals people get per UTC day (audits first); the rest wait for the next day")
    min_precision: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.9, description="When the 95% lower bound of audited precision falls below this, the threshold "
        "rises (or automatic labelling stops)")
    min_audits: Annotated[int, Field(ge=1)] = Field(
        default=20, description="Answered audits before the precision gate acts")
    train_on_auto: bool = Field(
        default=False, description="Also train the arms on automatic labels (off: only people's labels train)")
    interval_seconds: Annotated[int, Field(ge=5)] | None = Field(
        default=300, description="`labelloop serve`: how often the stream deployment looks at the arrivals "
        "folder (unset: only when run by hand)")


class TrustConfig(_Strict):
    """Which human labels are trusted enough to train on (flows/trust.py, tasks/trust.py).

    The batch agreement gate itself is ``gates.agreement_alpha``.
    """

    consensus: Literal["auto", "dawid_skene", "one_coin", "majority"] = Field(
        default="auto",
        description="auto picks by the crowd's shape: majority vote when items overlap too little to learn "
        "annotator quality, a one-coin model when the median annotator has fewer answers than there are labels, "
        "Dawid-Skene (confusions shrunk toward each annotator's one-coin matrix) otherwise (benchmarks/AGREEMENT.md)",
    )
    min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.7, description="An item is trusted when its consensus confidence reaches this; below it (or on a "
        "tie) it gets one more annotator up to annotation.max_overlap, then adjudication")
    min_answers: Annotated[int, Field(ge=1)] = Field(
        default=2, description="Counted answers an item needs before its consensus can be trusted")
    annotator_margin: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.25, description="Besides min_annotator_accuracy, an annotator this far below the median annotator "
        "(same basis: gold or leave-one-out) is flagged")
    adjudication: bool = Field(default=True, description="Send low-confidence items to an adjudicator")
    adjudicator_accuracy: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.98, description="Simulated backend: accuracy of the simulated adjudicator")
    gold_path: str | None = Field(
        default=None, description="File of gold items (id, text, label; the [data] column names); relative to "
        "the config file. Pool items listed by id become gold items (never queried by an arm)")
    gold_rate: Annotated[float, Field(ge=0.0, le=0.5)] = Field(
        default=0.0, description="Share of each pushed batch that is gold items (mixed in unmarked)")
    min_annotator_accuracy: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    min_gold_answers: Annotated[int, Field(ge=1)] = Field(
        default=10, description="Gold answers an annotator needs before gold accuracy can flag them")
    min_consensus_answers: Annotated[int, Field(ge=1)] = Field(
        default=30, description="Without enough gold: answers scored against the other annotators (leave-one-"
        "out) before that can flag them")
    annotator_policy: Literal["exclude", "downweight"] = "exclude"
    downweight: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.25, description="Vote weight of a flagged annotator under annotator_policy = downweight")
    adjudicated_as_gold: bool = Field(
        default=False, description="Also score annotators against adjudicated labels (hard items: biased low)")
    min_per_class: Annotated[int, Field(ge=0)] = Field(
        default=1, description="Training-set contract: minimum trusted examples per class")
    al_agreement_margin: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.10, description="Health warning when agreement on AL-selected items trails random picks by more")
    quarantine_undefined_alpha: bool = Field(
        default=False, description="Quarantine a batch whose alpha is undefined (no overlap / one label used)")
    ds_min_items: Annotated[int, Field(ge=2)] | None = Field(
        default=None, description="Items with >= 2 answers before Dawid-Skene replaces majority vote; "
        "default max(10, 5 x labels^2): EM on fewer fits noise")

    @model_validator(mode="after")
    def _gold_needs_source(self) -> "TrustConfig":
        if self.gold_rate > 0 and not self.gold_path:
            raise ValueError("trust.gold_rate > 0 needs trust.gold_path (the file the gold items come from)")
        return self


class ScaleConfig(_Strict):
    """Partitioned pool scoring on a Prefect task runner (flows/scoring.py, issue 7)."""

    partition_size: Annotated[int, Field(ge=100)] = Field(
        default=200_000, description="Texts per scoring partition (one Prefect task each); bounds memory per task")
    task_runner: Literal["threads", "dask"] = Field(
        default="threads", description="threads: ThreadPoolTaskRunner on this machine; dask: prefect-dask")
    dask_address: str | None = Field(
        default=None, description="Existing Dask scheduler (tcp://host:8786); unset with dask: a local cluster")
    dask_workers: Annotated[int, Field(ge=1)] = Field(default=2, description="Local Dask cluster: worker processes")
    max_workers: Annotated[int, Field(ge=1)] | None = Field(default=None, description="threads: pool size (default: cores)")


class CampaignConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    workdir: str = Field(default=".", description="Campaign folder (ledger, MLflow store, models); relative to the config file")
    data: DataConfig
    labels: LabelsConfig
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    annotation: AnnotationConfig = Field(default_factory=AnnotationConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    lock: LockConfig = Field(default_factory=LockConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)

    # Set by load_config: the folder relative paths are resolved against.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> "CampaignConfig":
        if self.query.batch_size > self.budget.max_labels:
            raise ValueError(
                f"query.batch_size ({self.query.batch_size}) is larger than budget.max_labels "
                f"({self.budget.max_labels})"
            )
        if self.splits.seed_size >= self.budget.max_labels:
            raise ValueError(
                f"splits.seed_size ({self.splits.seed_size}) must be below budget.max_labels "
                f"({self.budget.max_labels}): the seed is part of the label budget"
            )
        people = self.annotation.simulated.annotators
        if self.annotation.backend == "simulated" and len(people) < self.annotation.overlap:
            raise ValueError(f"annotation.overlap ({self.annotation.overlap}) asks for more answers per item than "
                             f"annotation.simulated has annotators ({len(people)}): no item could ever be complete")
        if self.annotation.max_overlap < self.annotation.overlap:
            raise ValueError(f"annotation.max_overlap ({self.annotation.max_overlap}) is below annotation.overlap "
                             f"({self.annotation.overlap}): it caps the answers an item may collect")
        if self.splits.seed_method == "keywords":
            if not self.splits.keywords:
                raise ValueError("splits.seed_method = 'keywords' needs [splits.keywords]: label -> list of keywords")
            unknown = sorted(set(self.splits.keywords) - set(self.labels.names))
            if unknown:
                raise ValueError(f"splits.keywords names labels that are not in labels.names: {unknown} "
                                 f"(labels: {self.labels.names})")
            empty = sorted(k for k, v in self.splits.keywords.items() if not [w for w in v if w.strip()])
            if empty:
                raise ValueError(f"splits.keywords has no keywords for: {empty}")
        if self.splits.seed_method == "stratified" and self.splits.seed_size < len(self.labels.names):
            raise ValueError(
                f"splits.seed_size ({self.splits.seed_size}) is smaller than the number of labels "
                f"({len(self.labels.names)}): a stratified seed needs one example per class"
            )
        return self

    # ----- resolved locations -------------------------------------------------
    @property
    def gold_file(self) -> Path | None:
        """``trust.gold_path`` resolved against the config file's folder (None when not set)."""
        if not self.trust.gold_path:
            return None
        p = Path(self.trust.gold_path)
        return (p if p.is_absolute() else self.base_dir / p).resolve()

    @property
    def test_file(self) -> Path | None:
        """``splits.test_path`` resolved against the config file's folder (None when not set)."""
        return _resolve(self.splits.test_path, self.base_dir) if self.splits.test_path else None

    @property
    def calibration_file(self) -> Path | None:
        """``splits.calibration_path`` resolved against the config file's folder (None when not set)."""
        return _resolve(self.splits.calibration_path, self.base_dir) if self.splits.calibration_path else None

    @property
    def workdir_path(self) -> Path:
        p = Path(self.workdir)
        return (p if p.is_absolute() else self.base_dir / p).resolve()

    @property
    def data_path(self) -> Path:
        return _resolve(self.data.path, self.base_dir)

    @property
    def ledger_url(self) -> str:
        if self.ledger.url_env:
            url = os.environ.get(self.ledger.url_env)
            if not url:
                raise ConfigError(f"ledger.url_env names {self.ledger.url_env!r} but that variable is not set")
            return url
        return self.ledger.url or f"sqlite:///{self.workdir_path / 'ledger.db'}"

    @property
    def arrivals_path(self) -> Path | None:
        if not self.drift.arrivals:
            return None
        return _resolve(self.drift.arrivals, self.base_dir)

    @property
    def stream_arrivals_path(self) -> Path | None:
        """``[stream] arrivals`` resolved against the config file's folder (None when not set)."""
        return _resolve(self.stream.arrivals, self.base_dir) if self.stream.arrivals else None

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.workdir_path / 'mlflow.db'}"

    @property
    def experiment_name(self) -> str:
        return self.mlflow.experiment or f"labelloop-{self.name}"

    @property
    def arms(self) -> list[str]:
        """The active arm, plus the random arm when the campaign measures itself against random."""
        if self.query.strategy == "random":
            return ["random"]
        return ["active", "random"] if self.query.random_arm else ["active"]

    def strategy_for(self, arm: str) -> str:
        return "random" if arm == "random" else self.query.strategy


def batch_trigger_enabled(cfg: CampaignConfig) -> bool:
    """Whether ``serve`` starts rounds on a completed batch (``[schedule] batch_trigger``; unset: with the
    Label Studio backend only -- the others answer at once, where ``labelloop run`` goes round after round)."""
    on = cfg.schedule.batch_trigger
    return cfg.annotation.backend == "label_studio" if on is None else bool(on)


def round_triggers(cfg: CampaignConfig) -> dict[str, Any]:
    """How rounds start, for ``labelloop status``: ``schedule`` (cron / interval / None), ``batch_trigger``
    (bool), ``how`` (``webhook+polling`` | ``polling`` | None) and ``sentence``."""
    s = cfg.schedule
    sched = (f"every {s.round_interval_seconds} s" if s.round_interval_seconds else
             f"cron '{s.round_cron}' ({s.timezone})" if s.round_cron else None)
    on = batch_trigger_enabled(cfg)
    webhook = on and s.webhooks and cfg.annotation.backend == "label_studio"
    how = None if not on else ("webhook+polling" if webhook else "polling")
    if on:
        receiver = s.webhook_url or (f"{s.webhook_host}:{s.webhook_port}" if s.webhook_port
                                     else f"{s.webhook_host}, a free port")
        where = (f"Label Studio's webhook (receiver on {receiver}, with its shared secret) and a polling check "
                 f"every {s.batch_poll_seconds} s" if webhook
                 else f"a polling check every {s.batch_poll_seconds} s" + (
                     "" if cfg.annotation.backend == "label_studio" else " (no webhooks outside Label Studio)"))
        sentence = (f"batch-triggered while `labelloop serve` runs: a round starts when the open batch is answered "
                    f"([run] batch_ready_share), found by {where}")
    else:
        why = "[schedule] batch_trigger = false" if s.batch_trigger is False else (
            f"[schedule] batch_trigger unset, backend {cfg.annotation.backend}")
        sentence = f"not batch-triggered ({why})"
    sentence += f"; schedule: {sched or 'none'}"
    return {"schedule": sched, "batch_trigger": on, "how": how, "sentence": sentence}


def tracking_params(cfg: CampaignConfig, featurizer: str | None = None) -> dict[str, Any]:
    """Campaign params for MLflow: choices only, never URLs or secrets (the round, drift and doctor log them).

    ``featurizer``: the features set-up chose (``Campaign.featurizer_kind``), which is what the
    model uses; the config's setting (``auto`` by default) is logged as ``featurizer_setting``.
    """
    return {
        "strategy": cfg.query.strategy, "batch_size": cfg.query.batch_size, "random_share": cfg.query.random_share,
        "class_quota": cfg.query.class_quota, "budget": cfg.budget.max_labels, "seed_size": cfg.splits.seed_size,
        "seed_method": cfg.splits.seed_method, "test_size": cfg.splits.test_size,
        "calibration_size": cfg.splits.calibration_size, "featurizer": featurizer or cfg.model.featurizer,
        "featurizer_setting": cfg.model.featurizer,
        "min_test_labels": cfg.splits.min_test_labels, "min_calibration_labels": cfg.splits.min_calibration_labels,
        "evaluation_labels": cfg.budget.evaluation_labels if cfg.budget.evaluation_labels is not None else "splits",
        "classifier": cfg.model.classifier, "C": cfg.model.C, "backend": cfg.annotation.backend,
        "overlap": cfg.annotation.overlap, "labels": ",".join(cfg.labels.names),
        "label_set_version": cfg.labels.version, "ece_gate": cfg.gates.calibration_ece,
    }


def _resolve(path: str, base_dir: Path) -> Path:
    """``path`` against ``base_dir``, symlinks resolved; a symlink loop stays unresolved (absolute)
    so that reading it reports the loop with the file's name instead of a RuntimeError traceback."""
    p = Path(path)
    p = p if p.is_absolute() else base_dir / p
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(p))


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid campaign config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")  # pydantic's wording, not ours
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `labelloop init` writes every valid key)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        # cross-key checks (no single location) name their keys at the start of the message
        lines.append(f"  - {loc}: {msg}" if loc else f"  - {msg}")
    return "\n".join(lines)


def parse_config(data: dict, *, base_dir: Path, source: str = "<dict>") -> CampaignConfig:
    try:
        cfg = CampaignConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    cfg.base_dir = base_dir.resolve()
    if cfg.workdir_path.exists() and not cfg.workdir_path.is_dir():
        raise ConfigError(f"invalid campaign config {source}:\n  - workdir: {cfg.workdir_path} is a file, not a folder")
    return cfg


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign TOML file; relative paths resolve against its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"campaign config not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"campaign config {p} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"campaign config {p} is not UTF-8 text: {err}") from None
    return parse_config(data, base_dir=p.parent, source=str(p))


EXAMPLE_CONFIG = Path(__file__).resolve().parent / "templates" / "campaign.toml"


def example_config(name: str = "my-campaign", labels: list[str] | None = None,
                   values: Mapping[str, Any] | None = None) -> str:
    """The commented example config (``flows/templates/campaign.toml``) with its name, labels and any
    ``values`` (dotted keys: ``{"budget.max_labels": 200}``) set, every comment kept.

    Why tomlkit: the template is a real TOML file a test validates against the schema, and the
    values are set as TOML values (quoted, escaped), never by editing its text.
    """
    doc = tomlkit.parse(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    settings: dict[str, Any] = {"name": name, **({"labels.names": list(labels)} if labels else {}), **(values or {})}
    for dotted, value in settings.items():
        *parents, key = dotted.split(".")
        table = doc
        for part in parents:
            if part not in table:
                table[part] = tomlkit.table()
            table = table[part]
        table[key] = value
    return tomlkit.dumps(doc)
