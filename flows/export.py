"""`labelloop export`: the labelled dataset a team takes away from a campaign.

Why a separate, read-only module: exporting must work on a campaign at any
point (mid-round, waiting for annotators, finished) without starting Prefect,
MLflow or an annotation backend, and without writing to the ledger. It reads
the ledger's tables and writes one file, atomically (a temp file in the target
folder, then a rename): an interrupted export leaves the previous file or
none, never half a file.

One row per item with at least one submitted answer:

=====================  =========================================================
item_id, text          the item
label                  the trust decision's label (for rows that are not trusted
                       or adjudicated: its current consensus guess, or empty)
status                 trusted | adjudicated | gold | pending | needs_more |
                       quarantined (see ``STATUS_MAP``)
confidence             the consensus posterior (adjudicated: the adjudicator's)
n_answers              submitted answers stored for the item
annotators             who answered: sorted, distinct, ``;``-joined (one string in
                       every format, so CSV, Parquet and JSONL rows are identical)
method                 dawid_skene | majority | adjudicator | ... (from the decision)
round                  the round in which the item was first queried
arm                    the arm(s) that queried it, ``;``-joined (active, random,
                       gold)
label_schema_version   the label-set version ``label`` belongs to
=====================  =========================================================

Without ``--all`` only ``trusted`` and ``adjudicated`` rows of pool items: what is safe to
train on (the campaign's test and calibration items measure its models; ``--all`` keeps them).

Automatic labels of stream mode (``flows/stream.py``: the champion model's, recorded with source
``auto``) are not human labels and are never exported unless asked for (``--include-auto``); then
each arrival labelled automatically that people did not answer is one more row with status
``auto``, method ``auto``, the model version in ``annotators``, ``n_answers`` 0 and arm ``stream``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelloop.tasks.errors import LabelloopError

if TYPE_CHECKING:
    import pandas as pd

# pandas, SQLAlchemy and the ledger are imported inside the functions: building the CLI parser
# (which registers this command) must stay cheap, and nothing here may pull in Prefect.

COLUMNS = ["item_id", "text", "label", "status", "confidence", "n_answers", "annotators", "method", "round", "arm",
           "label_schema_version"]
STATUSES = ["trusted", "adjudicated", "gold", "pending", "needs_more", "quarantined", "auto"]
DEFAULT_STATUSES = ("trusted", "adjudicated")
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# The ledger's latest trust decision (trust_items.status) -> the exported status. An item awaiting
# adjudication needs more than its answers can give: needs_more. Trusted with source "adjudicated"
# becomes "adjudicated" (see export_status). Anything unknown is exported as pending, never trusted.
STATUS_MAP = {"trusted": "trusted", "adjudication": "needs_more", "needs_more": "needs_more",
              "quarantined": "quarantined", "pending": "pending", "gold": "gold"}


class ExportError(LabelloopError, ValueError):
    """The export cannot be written (bad format, no ledger, missing folder); the message says why."""


@dataclass
class ExportSummary:
    path: str
    format: str
    rows: int
    counts: dict[str, int]  # exported rows per status
    answered_items: int  # items with at least one submitted answer (all statuses)
    all_counts: dict[str, int] = field(default_factory=dict)  # every answered item per status
    decided_round: int | None = None  # the trust decision the statuses come from (None: none yet)
    auto_left_out: int = 0  # automatic labels (stream mode) not exported: --include-auto adds them
    evaluation_left_out: int = 0  # trusted test / calibration items not exported: --all adds them

    def line(self) -> str:
        per = ", ".join(f"{s} {self.counts[s]}" for s in STATUSES if self.counts.get(s))
        text = f"exported {self.rows} row(s) to {self.path} ({self.format})" + (f": {per}" if per else "")
        if self.decided_round is None:
            text += "; no trust decision yet (run a round first): " + (
                "header only" if self.rows == 0 else "every answered item is pending")
        else:
            left = self.answered_items - self.rows - self.evaluation_left_out
            if self.evaluation_left_out:
                text += (f"; {self.evaluation_left_out} trusted evaluation item(s) (the campaign's test and "
                         "calibration sets) not exported, so a model trained on this file can still be measured "
                         "on them (--all includes them)")
            if left:
                text += f"; {left} other answered item(s) not exported (--all includes them)"
        if self.auto_left_out:
            text += (f"; {self.auto_left_out} automatic label(s) of stream mode not exported "
                     "(--include-auto includes them)")
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "rows": self.rows, "counts": self.counts,
                "answered_items": self.answered_items, "all_counts": self.all_counts,
                "decided_round": self.decided_round, "auto_left_out": self.auto_left_out,
                "evaluation_left_out": self.evaluation_left_out}


def export_status(status: Any, source: Any) -> str:
    """The exported status of one trust decision row."""
    if status == "trusted" and source == "adjudicated":
        return "adjudicated"
    return STATUS_MAP.get(str(status), "pending")


def _joined(values: Any) -> str:
    import pandas as pd

    return ";".join(sorted({str(v) for v in values if v is not None and not pd.isna(v)}))


def _schema_version(ledger: Any, decided_at: Any, fallback: int) -> int:
    """The label-set version in force when the latest decision was taken (labels are migrated to the
    current version before deciding): the newest version recorded by then."""
    import pandas as pd

    rows = list(ledger.trust.label_version_times().items())
    if not rows:
        return fallback
    if decided_at is None:
        return max(int(v) for v, _ in rows)
    when = pd.Timestamp(decided_at)
    when = when.tz_localize("UTC") if when.tzinfo is None else when

    def ts(x: Any) -> pd.Timestamp:
        t = pd.Timestamp(x)
        return t.tz_localize("UTC") if t.tzinfo is None else t

    before = [int(v) for v, at in rows if ts(at) <= when]
    return max(before) if before else min(int(v) for v, _ in rows)


def export_frame(ledger: Any, *, label_version: int, include_all: bool = False,
                 include_auto: bool = False) -> tuple["pd.DataFrame", dict]:
    """The export rows from the ledger (pure reads). Returns (rows, info) with info keys
    ``answered_items``, ``all_counts``, ``decided_round``, ``auto_labels`` (automatic labels in the
    ledger, exported or not)."""
    import pandas as pd

    people, info = _people_frame(ledger, label_version=label_version, include_all=include_all)
    auto = _auto_frame(ledger, label_version=label_version, answered=set(info.get("answered_ids", ())))
    info.pop("answered_ids", None)
    info["auto_labels"] = int(len(auto))
    if not include_auto or auto.empty:
        return people, info
    both = pd.concat([people, auto], ignore_index=True) if len(people) else auto
    both["round"] = both["round"].astype("Int64")
    return both.sort_values("item_id", kind="stable").reset_index(drop=True), info


def _auto_frame(ledger: Any, *, label_version: int, answered: set[str]) -> "pd.DataFrame":
    """Rows for the automatic labels of items people did not answer (status ``auto``)."""
    import pandas as pd

    frame = ledger.stream_frame()
    if len(frame):
        frame = frame[(frame["source"] == "auto") & frame["label"].notna() & ~frame["item_id"].isin(answered)]
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    texts = ledger.items_frame().set_index("item_id")["text"]
    return pd.DataFrame({
        "item_id": frame["item_id"].astype(str).to_numpy(), "text": texts.reindex(frame["item_id"]).to_numpy(),
        "label": frame["label"].to_numpy(), "status": "auto",
        "confidence": pd.to_numeric(frame["confidence"], errors="coerce").to_numpy(), "n_answers": 0,
        "annotators": ("model:" + frame["model_version"].fillna("?").astype(str)).to_numpy(), "method": "auto",
        "round": pd.array([pd.NA] * len(frame), dtype="Int64"), "arm": "stream",
        "label_schema_version": int(label_version)}, columns=COLUMNS)


def _people_frame(ledger: Any, *, label_version: int, include_all: bool) -> tuple["pd.DataFrame", dict]:
    """The rows of items people answered (see the module docstring)."""
    import pandas as pd

    ann = ledger.annotations_frame(submitted_only=True)
    rounds_ = ledger.trust.trust_rounds()
    decided_round = max(rounds_) if rounds_ else None
    info: dict[str, Any] = {"answered_items": 0, "all_counts": {}, "decided_round": decided_round}
    if ann.empty:
        return pd.DataFrame(columns=COLUMNS), info
    info["answered_ids"] = set(ann["item_id"].astype(str))

    per_item = ann.groupby("item_id").agg(n_answers=("annotator", "size"), annotators=("annotator", _joined))
    item_rows = ledger.items_frame().set_index("item_id")
    items = item_rows["text"]
    evaluation = set(item_rows.index[item_rows["split"].isin(["test", "calibration"])].astype(str))
    q = ledger.queries_frame()
    first_round = q.groupby("item_id")["round_no"].min() if len(q) else pd.Series(dtype="Int64")
    arms = q.groupby("item_id")["arm"].agg(_joined) if len(q) else pd.Series(dtype=object)
    tasks = ledger.tasks_frame()
    pushed_round = tasks.set_index("item_id")["round_no"] if len(tasks) else pd.Series(dtype="Int64")

    decision = ledger.trust.trust_items_frame()
    decision = decision.set_index("item_id") if len(decision) else pd.DataFrame(
        columns=["status", "label", "confidence", "source", "method"])
    version = label_version
    if decided_round is not None:
        version = _schema_version(ledger, rounds_[decided_round].get("decided_at"), label_version)

    ids = per_item.index
    d = decision.reindex(ids)
    status = [export_status(s, src) if isinstance(s, str) else "pending" for s, src in zip(d["status"], d["source"])]
    rounds_of = first_round.reindex(ids).astype("Int64")
    rounds_of = rounds_of.fillna(pushed_round.reindex(ids).astype("Int64"))  # adopted tasks have no query row
    out = pd.DataFrame({
        "item_id": ids.astype(str),
        "text": items.reindex(ids).to_numpy(),
        "label": d["label"].to_numpy(),
        "status": status,
        "confidence": pd.to_numeric(d["confidence"], errors="coerce").to_numpy(),
        "n_answers": per_item["n_answers"].astype(int).to_numpy(),
        "annotators": per_item["annotators"].to_numpy(),
        "method": d["method"].to_numpy(),
        "round": rounds_of.to_numpy(),
        "arm": arms.reindex(ids).fillna("").to_numpy(),
        "label_schema_version": version,
    }, columns=COLUMNS)
    out["round"] = out["round"].astype("Int64")
    out["label_schema_version"] = out["label_schema_version"].astype(int)
    info["answered_items"] = int(len(out))
    info["all_counts"] = {s: int((out["status"] == s).sum()) for s in STATUSES if s != "auto"}
    if not include_all:
        out = out[out["status"].isin(DEFAULT_STATUSES)]
        # the campaign's test and calibration items measure its models: a training set built from the
        # default export must not contain them (--all does, with arm "evaluation")
        is_eval = out["item_id"].isin(evaluation)
        info["evaluation_left_out"] = int(is_eval.sum())
        out = out[~is_eval]
    return out.sort_values("item_id", kind="stable").reset_index(drop=True), info


def resolve_format(out: Path, fmt: str | None) -> str:
    """``fmt`` when given, else from the file suffix (.csv, .parquet/.pq, .jsonl/.ndjson), else csv."""
    if fmt:
        if fmt not in ("csv", "parquet", "jsonl"):
            raise ExportError(f"unknown export format {fmt!r}; choose csv, parquet or jsonl")
        return fmt
    return FORMATS.get(out.suffix.lower(), "csv")


def write_atomically(frame: "pd.DataFrame", out: Path, fmt: str) -> None:
    """Write ``frame`` to ``out`` through a temp file in the same folder and a rename."""
    folder = out.parent
    if out.is_dir() or not out.name or out.name in (".", ".."):
        raise ExportError(f"--out {out}: is a folder; name the file to write, e.g. {out / 'labels.csv'}")
    if not folder.is_dir():
        raise ExportError(f"cannot write {out}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as err:  # the message names --out, not the temp file nobody asked for
        raise ExportError(f"cannot write {out}: {err.strerror or err}") from None
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's 0600 would leave the team's export readable by its writer only
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        elif fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in frame.astype(object).where(frame.notna(), None).to_dict("records"):
                    fh.write(json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n")
        with open(tmp, "rb+") as fh:  # on disk before the rename makes it the export
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise ExportError(f"cannot write {out}: {err.strerror or err}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else str(v)


def _open_ledger(cfg: Any) -> Any:
    """The campaign's ledger, read-only in spirit: a missing SQLite file is an error, not created."""
    from labelloop.flows.runtime import require_ledger
    from labelloop.integrations.ledger import Ledger

    require_ledger(cfg)
    return Ledger(cfg.ledger_url, cfg.name, create=False)


def export_dataset(config: str | Path, out: str | Path, *, fmt: str | None = None,
                   include_all: bool = False, include_auto: bool = False) -> ExportSummary:
    """Export the campaign's labelled items to ``out``; returns what was written."""
    from labelloop.flows.config import load_config

    cfg = load_config(config)
    out_path = Path(out)
    kind = resolve_format(out_path, fmt)
    ledger = _open_ledger(cfg)
    try:
        frame, info = export_frame(ledger, label_version=cfg.labels.version, include_all=include_all,
                                   include_auto=include_auto)
    finally:
        ledger.dispose()
    write_atomically(frame, out_path, kind)
    counts = {s: int((frame["status"] == s).sum()) for s in STATUSES if (frame["status"] == s).any()}
    return ExportSummary(path=str(out_path), format=kind, rows=int(len(frame)), counts=counts,
                         answered_items=info["answered_items"], all_counts=info["all_counts"],
                         decided_round=info["decided_round"],
                         auto_left_out=0 if include_auto else info.get("auto_labels", 0),
                         evaluation_left_out=info.get("evaluation_left_out", 0))


def cmd_export(a: Any) -> int:
    """CLI entry (argparse namespace: config, out, format, all, json). Exit 2 on bad input (its own
    errors here; config, ledger and file errors through the CLI's known errors)."""
    import sys

    try:
        summary = export_dataset(a.config, a.out, fmt=a.format, include_all=a.all,
                                 include_auto=getattr(a, "include_auto", False))
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary.as_dict()) if a.json else summary.line())
    return 0


def register(sub: Any) -> None:
    """Add ``export`` to an argparse sub-parser collection."""
    s = sub.add_parser("export", help="write the labelled dataset (trusted + adjudicated; --all: every answered item)")
    s.add_argument("config")
    s.add_argument("--out", required=True, help="output file")
    s.add_argument("--format", choices=["csv", "parquet", "jsonl"], default=None,
                   help="default: from the --out suffix (.csv, .parquet, .jsonl), else csv")
    s.add_argument("--all", action="store_true",
                   help="every item with answers (also gold, pending, needs_more, quarantined)")
    s.add_argument("--include-auto", action="store_true",
                   help="also the automatic labels of stream mode (status auto; never human labels)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(fn=cmd_export)
