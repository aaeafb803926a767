"""The ledger's schema: every table, in one place (issue 15).

Why one module: the tables are the contract between the ledger's methods
(integrations/ledger/core.py, integrations/ledger/trust.py) and the Alembic
migrations (integrations/ledger/migrations/). A change here needs a new
migration revision; tests/unit/test_ledger_migrations.py fails when a ledger
created from this module differs from one upgraded through the migrations.

``SCHEMA_VERSION`` is also written to ``meta.schema_version``: releases before
Alembic refuse a ledger whose number is above theirs (1), so an upgraded ledger
is never written by an old labelloop that would not understand it.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 2

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

items = Table(
    "items",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("text", Text, nullable=False),
    Column("known_label", String(256)),  # from the input file; hidden from the model except test/calibration
    Column("split", String(16), nullable=False),  # pool | seed | test | calibration
    Column("source_file", Text),
    Column("episode", String(64)),  # drift episode that brought the item in (None: initial ingest)
    Column("added_at", DateTime(timezone=True), nullable=False),
)

rounds = Table(
    "rounds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("arm", String(32), nullable=False),
    Column("round_no", Integer, nullable=False),
    Column("status", String(32), nullable=False),  # started | queried | pushed | done | stopped
    Column("strategy", String(64)),
    Column("model_version", String(128)),
    Column("mlflow_run_id", String(64)),
    Column("n_labels", Integer),
    Column("metrics", Text),  # JSON
    Column("notes", Text),  # JSON list of gate decisions / warnings
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    UniqueConstraint("campaign", "arm", "round_no", name="uq_round"),
)

queries = Table(
    "queries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("arm", String(32), nullable=False),
    Column("round_no", Integer, nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("strategy", String(64), nullable=False),
    Column("reason", String(32), nullable=False),  # seed | strategy | random | quota | diversity | gold
    Column("score", Float),
    Column("model_version", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("campaign", "arm", "item_id", name="uq_query_arm_item"),
)

tasks_table = Table(
    "tasks",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("backend", String(32), nullable=False),
    Column("backend_task_id", String(64), nullable=False),
    Column("round_no", Integer, nullable=False),
    Column("model_version", String(128)),
    Column("is_gold", Boolean, nullable=False, default=False),
    Column("pushed_at", DateTime(timezone=True), nullable=False),
    Column("missing_in_backend", Boolean, nullable=False, default=False),
)

annotations = Table(
    "annotations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), nullable=False),
    Column("backend", String(32), nullable=False),
    Column("backend_annotation_id", String(64), nullable=False),
    Column("backend_task_id", String(64), nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("annotator", String(256), nullable=False),
    Column("label", String(256)),
    Column("status", String(16), nullable=False),  # submitted | skipped | withdrawn (gone from the backend)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("pulled_in_round", Integer),
    Column("model_version", String(128)),  # the model that asked for this label
    # seconds the annotator spent (Label Studio's ``lead_time``); NULL when the backend does not say.
    # Added by migration 0003 (issue 17).
    Column("lead_time", Float, nullable=True),
    UniqueConstraint("campaign", "backend", "backend_annotation_id", name="uq_annotation"),
)


# ----- trust (issue 5): trusted labels, gold, adjudication, label-set versions, adaptive redundancy


trust_items = Table(  # the trust decision per round and item: what trained the models of that round
    "trust_items",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("round_no", Integer, primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("batch", Integer),  # tasks.round_no of the item
    Column("status", String(16), nullable=False),  # trusted | adjudication | quarantined | pending | gold
    Column("label", String(256)),
    Column("confidence", Float),
    Column("source", String(16)),  # consensus | adjudicated
    Column("method", String(32)),  # dawid_skene | majority | adjudicator
    Column("n_annotations", Integer),
    Column("n_trusted_annotations", Integer),
    Column("reason", Text),
)

batch_decisions = Table(  # quarantine gate per batch, as decided in each round
    "batch_decisions",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("round_no", Integer, primary_key=True),  # the round that decided
    Column("batch", Integer, primary_key=True),
    Column("n_items", Integer),
    Column("n_annotations", Integer),
    Column("krippendorff_alpha", Float),
    Column("alpha_all_annotators", Float),
    Column("percent_agreement", Float),
    Column("status", String(16), nullable=False),  # passed | quarantined | undefined
    Column("reason", Text),
)

annotator_status = Table(  # annotator quality over time
    "annotator_status",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("round_no", Integer, primary_key=True),
    Column("annotator", String(256), primary_key=True),
    Column("n_gold", Integer),
    Column("gold_accuracy", Float),
    Column("n_loo", Integer),
    Column("loo_accuracy", Float),
    Column("n_consensus", Integer),
    Column("consensus_accuracy", Float),
    Column("basis", String(16)),  # gold | consensus | insufficient
    Column("flagged", Boolean, nullable=False, default=False),
    Column("action", String(64)),  # "" | excluded | weight 0.25
)

adjudications = Table(  # the adjudication queue and its answers (one row per item; the answer wins)
    "adjudications",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("requested_round", Integer, nullable=False),
    Column("reason", Text),
    Column("consensus_label", String(256)),
    Column("consensus_confidence", Float),
    Column("status", String(16), nullable=False),  # pending | done
    Column("label", String(256)),
    Column("label_version", Integer),
    Column("adjudicator", String(256)),
    Column("decided_round", Integer),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
)

gold_labels = Table(  # known labels of gold items (mixed unmarked into batches)
    "gold_labels",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("label", String(256), nullable=False),
    Column("source", String(32), nullable=False),  # file | adjudicated
    Column("added_at", DateTime(timezone=True), nullable=False),
)

label_versions = Table(  # every version of the label set, with the mapping from the previous one
    "label_versions",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("names", Text, nullable=False),  # JSON list
    Column("mapping_from_previous", Text),  # JSON {old label: new label | null}
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

annotation_label_versions = Table(  # the label-set version each annotation was given under
    "annotation_label_versions",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("backend", String(32), primary_key=True),
    Column("backend_annotation_id", String(64), primary_key=True),
    Column("label_version", Integer, nullable=False),
)

trust_rounds = Table(  # the round's trust summary (read by `labelloop status` even when no arm trained)
    "trust_rounds",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("round_no", Integer, primary_key=True),
    Column("metrics", Text, nullable=False),  # JSON
    Column("notes", Text, nullable=False),  # JSON list
    Column("tags", Text, nullable=False),  # JSON
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

answer_targets = Table(  # adaptive redundancy: items asked for more answers than the campaign's overlap
    "answer_targets",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("target", Integer, nullable=False),  # answers now asked for
    Column("exhausted", Boolean, nullable=False, default=False),  # the backend can give no further answer
    Column("round_no", Integer),  # the round that last changed it
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# ----- stream mode (issue 17): arriving texts labelled by the champion or by people. Added by migration 0004.

stream_items = Table(  # one decision per arrival: labelled automatically, audited, sent to people, or held
    "stream_items",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("arrival_file", Text),
    Column("route", String(16), nullable=False),  # auto | audit | routed | held (tasks/stream.py)
    Column("label", String(256)),  # the automatic label (auto / audit); NULL when people label the item
    Column("source", String(16)),  # "auto" for an automatic label: never a human label
    Column("confidence", Float),  # calibrated top-class probability of the model that decided
    Column("raw_confidence", Float),
    Column("predicted_label", String(256)),
    Column("model_version", String(128)),  # the champion's registry version (or the run) that decided
    Column("threshold", Float),  # the threshold in force (NULL: automatic labelling was stopped)
    Column("day", String(10), nullable=False),  # UTC date the item went to people (the daily budget), else decided
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),  # when it went to people (routed / audit); NULL otherwise
)

stream_files = Table(  # arrival files already consumed: a rerun never ingests one twice
    "stream_files",
    metadata,
    Column("campaign", String(64), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("path", Text, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("added", Integer, nullable=False),
    Column("consumed_at", DateTime(timezone=True), nullable=False),
)
