"""Great Expectations data contracts for the pool, pulled annotations and training sets.

Why contracts here and not ad-hoc ``assert``s in the tasks: a bad batch must stop a
round *before* it reaches the ledger or the model, and the person fixing it needs
every offender at once (which ids, which rows, which rule) — not the first
exception. Great Expectations gives us declarative, reportable rules; we keep its
results small (``ValidationSummary``) so the round flow can log them to MLflow as
the data docs of that validation.

Implementation notes:

* One ephemeral GX context per process, created lazily on first use (importing GX
  takes several seconds; modules that never validate must not pay for it). Each
  validation adds a uniquely named dataframe asset, suite and validation definition,
  runs, and removes them again, so repeated or concurrent calls never collide and a
  long-running ``serve`` process does not accumulate state. A lock serialises runs:
  a GX context is not thread-safe and Prefect may run tasks on threads.
* Rules that GX cannot express on the raw frame (text blank after stripping is done
  by regex; "each class has ≥ n examples", "one label per item") are expressed on
  helper columns added to a *copy* of the frame, so the rule is still a GX
  expectation with row-level offenders.
* Offending rows are identified with ``unexpected_index_column_names``: the id column
  plus ``source_file``/``source_row`` when the frame came from ``sources.load_table``,
  so an error can say "pool.csv row 7" even when the id itself is missing.
"""

from __future__ import annotations

import html
import json
import math
import threading
import time
import unicodedata
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import pandas as pd

from labelloop.integrations.sources import InputError, _encoding_error, _encoding_for_text, normalise_id
from labelloop.tasks.errors import LabelloopError

__all__ = [
    "ContractFailure",
    "DataContractError",
    "ExpectationOutcome",
    "ValidationSummary",
    "validate_annotations",
    "validate_label_set",
    "validate_pool",
    "validate_training_set",
]

MAX_SAMPLE_IDS = 10
ANNOTATION_STATUSES = ("submitted", "skipped", "withdrawn")  # withdrawn: deleted in the backend, or edited away
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=timezone.utc)
FUTURE_SLACK = timedelta(minutes=5)  # clock skew between the annotation server and us


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ContractFailure:
    """One failed rule: what, where, how many, which (first ``MAX_SAMPLE_IDS`` distinct ids)."""

    expectation: str  # GX expectation type, e.g. "expect_column_values_to_be_unique"
    column: str | None
    n_unexpected: int
    sample_ids: list[str] = field(default_factory=list)
    detail: str = ""

    def describe(self, contract: str = "", source: str = "") -> str:
        """One line for an error message or a log."""
        where = f"{contract} contract" if contract else "data contract"
        if source:
            where += f" ({source})"
        column = f" on column {self.column!r}" if self.column else ""
        ids = f"; first ids: {', '.join(self.sample_ids)}" if self.sample_ids else ""
        detail = f"; {self.detail}" if self.detail else ""
        return f"{where}: {self.expectation}{column}: {self.n_unexpected} unexpected{ids}{detail}"


class ExpectationOutcome(NamedTuple):
    """(expectation, success, n_unexpected); ``expectation`` reads "type(column)" so two
    rules of the same type on different columns stay distinguishable."""

    expectation: str
    success: bool
    n_unexpected: int


class DataContractError(LabelloopError, ValueError):
    """The data broke its contract. ``failures`` lists every failed rule; ``summary``
    (when GX ran) is the full report, so a caller can still log it before stopping."""

    def __init__(
        self,
        failures: Sequence[ContractFailure],
        *,
        contract: str = "",
        source: str = "",
        summary: ValidationSummary | None = None,
    ) -> None:
        self.failures: list[ContractFailure] = list(failures)
        self.contract = contract
        self.source = source
        self.summary = summary
        super().__init__("\n".join(f.describe(contract, source) for f in self.failures))


@dataclass
class ValidationSummary:
    """What a validation found, small enough to log (MLflow) and render as a report."""

    success: bool
    n_rows: int
    results: list[ExpectationOutcome]
    contract: str = ""
    source: str = ""
    failures: list[ContractFailure] = field(default_factory=list)
    duration_s: float = 0.0
    validated_at: str = ""
    engine: str = ""
    _details: list[ContractFailure | None] = field(default_factory=list, repr=False)

    def _rows(self) -> list[tuple[ExpectationOutcome, ContractFailure | None]]:
        details = self._details or [None] * len(self.results)
        return list(zip(self.results, details))

    def _title(self) -> str:
        state = "passed" if self.success else "FAILED"
        return f"Data contract '{self.contract or 'data'}' {state}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (e.g. for ``mlflow.log_dict``)."""
        return {
            "contract": self.contract,
            "source": self.source,
            "success": self.success,
            "n_rows": self.n_rows,
            "validated_at": self.validated_at,
            "duration_s": round(self.duration_s, 4),
            "engine": self.engine,
            "results": [
                {
                    "expectation": outcome.expectation,
                    "success": outcome.success,
                    "n_unexpected": outcome.n_unexpected,
                    "sample_ids": list(failure.sample_ids) if failure else [],
                    "detail": failure.detail if failure else "",
                }
                for outcome, failure in self._rows()
            ],
        }

    def to_markdown(self) -> str:
        """A short Markdown page: header facts and one table row per expectation."""
        lines = [
            f"# {self._title()}",
            "",
            f"- source: {self.source or '(not given)'}",
            f"- rows: {self.n_rows}",
            f"- expectations: {len(self.results)}, failed: {sum(not r.success for r in self.results)}",
            f"- validated at: {self.validated_at} in {self.duration_s:.3f} s ({self.engine})",
            "",
            "| expectation | result | unexpected | first ids | detail |",
            "|---|---|---|---|---|",
        ]

        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        for outcome, failure in self._rows():
            ids = ", ".join(failure.sample_ids) if failure else ""
            detail = failure.detail if failure else ""
            lines.append(
                f"| {cell(outcome.expectation)} | {'pass' if outcome.success else '**FAIL**'} | "
                f"{outcome.n_unexpected} | {cell(ids)} | {cell(detail)} |"
            )
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """A self-contained HTML page (GX Data Docs need a file-backed context; this is the
        same information without writing a site)."""
        e = html.escape
        rows = []
        for outcome, failure in self._rows():
            colour = "#e6f4ea" if outcome.success else "#fce8e6"
            rows.append(
                f'<tr style="background:{colour}"><td><code>{e(outcome.expectation)}</code></td>'
                f"<td>{'pass' if outcome.success else '<b>FAIL</b>'}</td>"
                f"<td>{outcome.n_unexpected}</td>"
                f"<td>{e(', '.join(failure.sample_ids)) if failure else ''}</td>"
                f"<td>{e(failure.detail) if failure else ''}</td></tr>"
            )
        return (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{e(self._title())}</title>"
            "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px;"
            "text-align:left;vertical-align:top}table{border-collapse:collapse}</style>"
            f"</head><body><h1>{e(self._title())}</h1>"
            f"<p>source: {e(self.source or '(not given)')}<br>rows: {self.n_rows}<br>"
            f"validated at: {e(self.validated_at)} in {self.duration_s:.3f} s ({e(self.engine)})</p>"
            "<table><tr><th>expectation</th><th>result</th><th>unexpected</th>"
            "<th>first ids</th><th>detail</th></tr>"
            + "".join(rows)
            + "</table></body></html>\n"
        )


# --------------------------------------------------------------------------- GX plumbing

_LOCK = threading.RLock()
_GX: dict[str, Any] = {}


def _gx() -> dict[str, Any]:
    """The process-wide GX context and pandas datasource, created on first use."""
    with _LOCK:
        if not _GX:
            _GX.update(_create_gx())
    return _GX


def _create_gx() -> dict[str, Any]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # "Created temporary directory ... for ephemeral docs site" on every process start is noise.
    # GE sets that module's logger to INFO itself, so the parent's level alone does not hold it.
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    # tqdm bars on every validation would flood Prefect/pytest logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    datasource = context.data_sources.add_pandas(name=f"labelloop-{uuid.uuid4().hex[:8]}")
    return {"gx": gx, "context": context, "datasource": datasource, "version": gx.__version__}


def _batch_definition(state: dict[str, Any], contract: str) -> Any:
    """The contract's dataframe asset and batch definition, created once per process (under ``_LOCK``).

    Why: adding an asset, a suite and a validation definition to the context and deleting them
    again on every validation rewrote the context's configuration (YAML) six times a contract,
    ~0.2 s each time; a round validates three contracts (issue 18). The suite is built per call
    (its value sets change) and validated on the batch directly (``Batch.validate``): the same
    GX validation, the same per-expectation results.
    """
    cache = state.setdefault("batch_definitions", {})
    if contract not in cache:
        name = f"{contract.replace(' ', '_')}-{uuid.uuid4().hex[:8]}"
        asset = state["datasource"].add_dataframe_asset(name=name)
        cache[contract] = asset.add_batch_definition_whole_dataframe(name)
    return cache[contract]


@dataclass
class _Check:
    """One expectation plus how to explain its failure.

    ``build`` creates the GX expectation lazily (so GX is imported only when a
    validation actually runs). ``explain`` turns the GX result into the ``detail``
    text; ``show_values`` lists distinct offending values (off for free text, which
    can be huge or personal).
    """

    build: Callable[[Any], Any]  # gxe module -> Expectation
    column: str | None
    explain: Callable[[dict[str, Any]], str] | None = None
    show_values: bool = True
    count: Callable[[dict[str, Any]], int] | None = None  # for rules without unexpected_count


def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _value_text(value: Any) -> str:
    if isinstance(value, dict):  # compound-column rules report {column: value}
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def _sample_ids(index_list: list[Any], id_col: str) -> list[str]:
    """Distinct ids of offending rows, in row order; rows without an id are named by
    file and row instead, so a missing id still points somewhere."""
    seen: dict[str, None] = {}
    for entry in index_list:
        if not isinstance(entry, dict):
            continue
        value = entry.get(id_col)
        if _is_missing(value):
            if "source_row" in entry:
                name = Path(str(entry.get("source_file", ""))).name
                value = f"<no id: {name} row {entry['source_row']}>"
            else:
                value = "<no id>"
        seen.setdefault(str(value), None)
        if len(seen) >= MAX_SAMPLE_IDS:
            break
    return list(seen)


def _row_refs(index_list: list[Any]) -> str:
    refs: list[str] = []
    for entry in index_list:
        if isinstance(entry, dict) and "source_row" in entry:
            refs.append(f"{Path(str(entry.get('source_file', ''))).name} row {entry['source_row']}")
        if len(refs) >= MAX_SAMPLE_IDS:
            break
    if not refs:
        return ""
    more = f" (+{len(index_list) - len(refs)} more)" if len(index_list) > len(refs) else ""
    return "rows: " + ", ".join(refs) + more


# Contracts that usually pass, run every round (annotations, training sets): validated pass/fail only
# first, and in full (offending rows and values) only when a rule fails. The pool contract runs once, at
# set-up, where a failure is what the user needs to see at once: straight to the full run.
QUICK_FIRST = frozenset({"annotations", "training set"})


def _clean(evr: Any) -> bool:
    """A rule's result that passed without GX raising while evaluating it."""
    info = evr.exception_info or {}
    return bool(evr.success) and not (isinstance(info, dict) and info.get("raised_exception"))


def _run_contract(
    contract: str,
    frame: pd.DataFrame,
    checks: list[_Check],
    *,
    id_col: str,
    source: str,
) -> ValidationSummary:
    """Run ``checks`` on ``frame`` in GX and turn the result into a summary; raise
    ``DataContractError`` (carrying the summary) when any check failed."""
    started = time.perf_counter()
    state = _gx()
    gx = state["gx"]
    import great_expectations.expectations as gxe

    index_cols = [c for c in (id_col, "source_file", "source_row") if c in frame.columns]
    expectations = []
    for number, check in enumerate(checks):
        expectation = check.build(gxe)
        expectation.meta = {"labelloop_check": number}
        expectations.append(expectation)

    def validate(result_format: dict[str, Any]) -> Any:
        batch = _batch_definition(state, contract).get_batch(batch_parameters={"dataframe": frame})
        suite = gx.ExpectationSuite(name=f"{contract.replace(' ', '_')}-{uuid.uuid4().hex[:12]}",
                                    expectations=expectations)
        return batch.validate(suite, result_format=result_format)

    try:
        with _LOCK:
            result = None
            if contract in QUICK_FIRST:
                # Pass/fail only first: GX then builds no metrics for offenders (half the time of a round's
                # contracts); only when a rule fails is it run again for the offending rows and values.
                quick = validate({"result_format": "BOOLEAN_ONLY"})
                result = quick if quick.success and all(_clean(r) for r in quick.results) else None
            if result is None:
                result = validate({"result_format": "COMPLETE", "unexpected_index_column_names": index_cols})
    except Exception as exc:  # GX failing on odd data must still read as a data problem
        raise DataContractError(
            [
                ContractFailure(
                    "great_expectations_run",
                    None,
                    0,
                    [],
                    f"GX could not evaluate the contract: {type(exc).__name__}: {str(exc)[:300]}",
                )
            ],
            contract=contract,
            source=source,
        ) from exc

    by_check: dict[int, Any] = {}
    for position, evr in enumerate(result.results):
        meta = evr.expectation_config.meta or {}
        by_check[int(meta.get("labelloop_check", position))] = evr

    outcomes: list[ExpectationOutcome] = []
    details: list[ContractFailure | None] = []
    failures: list[ContractFailure] = []
    for number, check in enumerate(checks):
        evr = by_check.get(number)
        kind = evr.expectation_config.type if evr is not None else "unknown"
        label = f"{kind}({check.column})" if check.column else kind
        if evr is None:  # should not happen; never let a silent gap pass as success
            failure = ContractFailure(kind, check.column, 0, [], "GX returned no result for this rule")
            outcomes.append(ExpectationOutcome(label, False, 0))
            details.append(failure)
            failures.append(failure)
            continue
        res = dict(evr.result or {})
        exception = evr.exception_info or {}
        raised = exception.get("raised_exception") if isinstance(exception, dict) else False
        n_unexpected = int(res.get("unexpected_count") or 0)
        if check.count is not None and not evr.success:
            n_unexpected = check.count(res)
        if evr.success and not raised:
            outcomes.append(ExpectationOutcome(label, True, n_unexpected))
            details.append(None)
            continue
        index_list = list(res.get("unexpected_index_list") or [])
        parts: list[str] = []
        if raised:
            parts.append(f"GX could not evaluate the rule: {exception.get('exception_message')}")
        if check.explain is not None:
            explained = check.explain(res)
            if explained:
                parts.append(explained)
        if check.show_values and res.get("unexpected_list"):
            values = list(dict.fromkeys(_value_text(v) for v in res["unexpected_list"]))
            shown = ", ".join(_short(v) for v in values[:MAX_SAMPLE_IDS])
            more = f" (+{len(values) - MAX_SAMPLE_IDS} more)" if len(values) > MAX_SAMPLE_IDS else ""
            parts.append(f"values: {shown}{more}")
        rows = _row_refs(index_list)
        if rows:
            parts.append(rows)
        failure = ContractFailure(
            expectation=kind,
            column=check.column,
            n_unexpected=n_unexpected,
            sample_ids=_sample_ids(index_list, id_col),
            detail="; ".join(parts),
        )
        outcomes.append(ExpectationOutcome(label, False, n_unexpected))
        details.append(failure)
        failures.append(failure)

    summary = ValidationSummary(
        success=not failures,
        n_rows=len(frame),
        results=outcomes,
        contract=contract,
        source=source,
        failures=failures,
        duration_s=time.perf_counter() - started,
        validated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        engine=f"great_expectations {state['version']}",
        _details=details,
    )
    if failures:
        raise DataContractError(failures, contract=contract, source=source, summary=summary)
    return summary


def _require_columns(frame: Any, required: Iterable[str], *, contract: str, source: str) -> None:
    """Missing columns are reported as contract failures up front: GX would otherwise
    raise inside every rule that touches them."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{contract} contract ({source}): expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        available = ", ".join(repr(str(c)) for c in frame.columns) or "(none)"
        failures = [
            ContractFailure("expect_column_to_exist", c, 0, [], f"available columns: {available}")
            for c in missing
        ]
        raise DataContractError(failures, contract=contract, source=source)


def _membership(values: pd.Series, members: Iterable[Any]) -> pd.Series:
    """True/False per row: is the value in ``members`` (None where the value is missing,
    so a missing id is reported once, by its not-null rule).

    Why a helper column instead of ``ExpectColumnValuesToBeInSet(value_set=members)``:
    GX re-serialises an expectation's parameters many times per run, so a value set of
    the whole ledger costs ~0.15 ms per member (1M items took minutes). Membership is
    computed once here (a hash lookup) and the GX rule stays a row-level expectation
    with the offending rows reported as usual.
    """
    member_set = members if isinstance(members, (set, frozenset)) else set(members)
    member_set = {str(m) for m in member_set}
    flags = values.map(lambda v: None if _is_missing(v) else str(v) in member_set)
    return flags.astype(object)


def _offending_values(frame: pd.DataFrame, flag_col: str, value_col: str) -> Callable[[], str]:
    """Lazily list the distinct values of ``value_col`` on rows where ``flag_col`` is False."""

    def listing() -> str:
        bad = frame.loc[frame[flag_col].map(lambda f: f is False), value_col]
        values = list(dict.fromkeys(str(v) for v in bad))
        more = f" (+{len(values) - MAX_SAMPLE_IDS} more)" if len(values) > MAX_SAMPLE_IDS else ""
        return ", ".join(_short(v) for v in values[:MAX_SAMPLE_IDS]) + more

    return listing


def _type_detail(what: str) -> Callable[[dict[str, Any]], str]:
    """Explain a failed str-type rule: per row (object columns) or for the dtype."""

    def explain(result: dict[str, Any]) -> str:
        if result.get("observed_value") is not None:
            return f"{what} must be strings; column dtype is {result['observed_value']}"
        kinds = sorted({type(v).__name__ for v in result.get("unexpected_list") or []})
        return f"{what} must be strings; found {', '.join(kinds)}"

    return explain


def _normalised_labels(labels: Sequence[str] | None, source: str) -> list[str] | None:
    return None if labels is None else validate_label_set(labels, source=source)


# --------------------------------------------------------------------------- contracts


def validate_label_set(
    labels: Sequence[str], *, source: str = "", where: str = "position"
) -> list[str]:
    """Check a label set and return it normalised (NFC, stripped), order kept.

    Rules: at least two labels; no empty or whitespace-only names; no duplicates after
    normalisation *and* case-folding ("Pos" and "pos" in one set is a typo, and the two
    would split one class in two). Pure Python (no GX): label sets are tiny and this is
    called at campaign set-up, before anything heavy is imported.

    ``where`` names positions in messages ("position" for lists, "line" for a
    one-per-line file); positions are 1-based.

    Raises:
        InputError: not a list of strings (a single string, a number, ``None`` entries).
        DataContractError: empty names, duplicates, fewer than two labels.
    """
    prefix = f"label set ({source})" if source else "label set"
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise InputError(
            f"{prefix}: expected a list of label names, got {type(labels).__name__} {_short(labels)}",
            path=source or None,
        )
    labels = list(labels)
    for position, value in enumerate(labels, start=1):
        if not isinstance(value, str):
            raise InputError(
                f"{prefix}: {where} {position}: label names must be strings, got "
                f"{type(value).__name__} {_short(value)}",
                path=source or None,
                line=position,
            )
    normalised = [unicodedata.normalize("NFC", v).strip() for v in labels]
    failures: list[ContractFailure] = []

    empty = [i for i, v in enumerate(normalised, start=1) if not v]
    if empty:
        failures.append(
            ContractFailure(
                "expect_label_names_to_be_non_empty",
                "label",
                len(empty),
                [f"{where} {i}" for i in empty[:MAX_SAMPLE_IDS]],
                f"empty or whitespace-only label name at {where} {', '.join(map(str, empty[:MAX_SAMPLE_IDS]))}",
            )
        )
    first_seen: dict[str, int] = {}
    duplicates: list[tuple[str, int, int]] = []
    for i, v in enumerate(normalised, start=1):
        if not v:
            continue
        key = v.casefold()
        if key in first_seen:
            duplicates.append((v, first_seen[key], i))
        else:
            first_seen[key] = i
    if duplicates:
        failures.append(
            ContractFailure(
                "expect_label_names_to_be_unique",
                "label",
                len(duplicates),
                list(dict.fromkeys(d[0] for d in duplicates))[:MAX_SAMPLE_IDS],
                "; ".join(
                    f"{v!r} at {where} {i} duplicates {normalised[j - 1]!r} at {where} {j}"
                    for v, j, i in duplicates[:MAX_SAMPLE_IDS]
                )
                + " (compared after Unicode NFC, stripping and case-folding)",
            )
        )
    if len(first_seen) < 2 and not failures:
        failures.append(
            ContractFailure(
                "expect_at_least_two_labels",
                "label",
                0,
                list(first_seen),
                f"a classifier needs at least two classes; got {len(first_seen)}",
            )
        )
    if failures:
        raise DataContractError(failures, contract="label set", source=source)
    return normalised


def load_label_set(path: str | Path, *, encoding: str = "utf-8") -> list[str]:
    """Read a label-set file and check it (:func:`validate_label_set`).

    Formats: ``.json`` holding a list of strings, or any text file with one label per
    line (trailing blank lines ignored; a blank line *between* labels is reported as an
    empty label name, because it usually means a label was deleted by accident).
    Positions in error messages are line numbers (text) or 1-based list positions (JSON).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such label-set file", path=path)
    try:
        raw = path.read_text(encoding=_encoding_for_text(encoding))
    except UnicodeError as exc:
        raise _encoding_error(path, encoding, exc) from None
    if path.suffix.lower() == ".json":
        try:
            labels = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})", path=path, line=exc.lineno
            ) from None
        if not isinstance(labels, list):
            raise InputError(
                f"{path}: expected a JSON list of label names, got {type(labels).__name__}", path=path
            )
    else:
        labels = raw.splitlines()
        while labels and not labels[-1].strip():
            labels.pop()
    return validate_label_set(labels, source=str(path), where="position" if path.suffix.lower() == ".json" else "line")


def validate_pool(
    df: pd.DataFrame,
    *,
    label_set: Sequence[str] | None,
    max_text_length: int = 10_000,
    source: str = "",
) -> ValidationSummary:
    """The pool contract (the frame ``sources.load_table`` returns).

    Rules: at least one row; ``id`` not null and unique (ids are compared as loaded,
    i.e. after NFC + strip, so " a1" and "a1" are reported here); ``text`` not null, not
    blank after stripping, at most ``max_text_length`` characters (a 10 MB "text" is
    a broken export, and would blow up vectorisers and annotation UIs); when
    ``label_set`` is given, every present label is in it (rows without a label are
    fine: that is what a pool is).

    Raises:
        DataContractError: one ``ContractFailure`` per broken rule (with ids and rows).
    """
    contract = "pool"
    _require_columns(df, ["id", "text"], contract=contract, source=source)
    labels = _normalised_labels(label_set, source or "label_set")
    if max_text_length < 1:
        raise InputError(f"validate_pool: max_text_length must be ≥ 1, got {max_text_length}")
    frame = df.reset_index(drop=True).copy()
    # Uniqueness is judged on the normalised id even when the caller did not load the
    # frame through sources.load_table; the report still shows the ids as given.
    frame["id_normalised"] = frame["id"].map(lambda v: v if _is_missing(v) else normalise_id(v))

    checks = [
        _Check(lambda g: g.ExpectTableRowCountToBeBetween(min_value=1), None,
               lambda r: "the pool is empty", show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToNotBeNull(column="id"), "id",
               lambda r: "missing or blank ids", show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToBeOfType(column="id", type_="str"), "id",
               _type_detail("ids")),
        _Check(lambda g: g.ExpectColumnValuesToBeUnique(column="id_normalised"), "id",
               lambda r: "duplicate ids (compared after Unicode NFC + strip; helper column "
               "id_normalised)", show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToNotBeNull(column="text"), "text",
               lambda r: "missing texts", show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToBeOfType(column="text", type_="str"), "text",
               _type_detail("texts"), show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToNotMatchRegex(column="text", regex=r"^\s*$"), "text",
               lambda r: "empty or whitespace-only texts", show_values=False),
        _Check(
            lambda g: g.ExpectColumnValueLengthsToBeBetween(column="text", max_value=max_text_length),
            "text",
            lambda r: (
                f"texts longer than {max_text_length} characters (longest: "
                f"{max((len(str(v)) for v in r.get('unexpected_list') or []), default=0)})"
            ),
            show_values=False,
        ),
    ]
    if labels is not None and "label" in frame.columns:
        checks.append(
            _Check(
                lambda g: g.ExpectColumnValuesToBeInSet(column="label", value_set=labels, mostly=1.0),
                "label",
                lambda r: f"labels outside the label set {labels}",
            )
        )
    return _run_contract(contract, frame, checks, id_col="id", source=source)


def _as_utc(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC; naive values are taken as UTC, unparseable → NaT
    (reported by a not-null rule, rather than crashing the comparison)."""
    converted = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    return converted


def validate_annotations(
    df: pd.DataFrame,
    *,
    known_items: Iterable[str],
    known_annotators: Iterable[str] | None,
    label_set: Sequence[str],
    source: str = "",
    now: datetime | None = None,
) -> ValidationSummary:
    """The contract for annotations pulled back from the backend (rows shaped like
    ``backend.PulledAnnotation``: ``item_id, annotator, label, status`` and optional
    ``backend_annotation_id, created_at, updated_at``).

    Rules: ``item_id`` present and a known item (an annotation for an item we never
    pushed means the backend project is shared or stale); ``annotator`` present and
    known (when ``known_annotators`` is given); ``status`` is "submitted" or "skipped";
    labels in the label set, and a submitted annotation has one (a skipped one has
    none — allowed); at most one submitted ("live") annotation per
    (item_id, annotator), otherwise one person's vote would count twice in agreement;
    timestamps parse, are not before 2000 and not in the future (+5 min clock slack;
    ``now`` is injectable for tests).

    Offending rows are named by ``backend_annotation_id`` when present (findable in the
    backend), else by ``item_id``; the offending values (item ids, annotators,
    labels) are listed in each failure's detail.
    """
    contract = "annotations"
    _require_columns(df, ["item_id", "annotator", "label", "status"], contract=contract, source=source)
    labels = validate_label_set(label_set, source=source or "label_set")
    id_col = "backend_annotation_id" if "backend_annotation_id" in df.columns else "item_id"
    frame = df.reset_index(drop=True).copy()
    if id_col == "backend_annotation_id":
        frame[id_col] = frame[id_col].map(lambda v: None if _is_missing(v) else str(v))
    frame["item_known"] = _membership(frame["item_id"], known_items)
    unknown_items = _offending_values(frame, "item_known", "item_id")
    # Annotators are few: the GX rule can test the column directly, against only the
    # known names that occur (same verdict as the full list, bounded cost).
    present_annotators = {str(a) for a in frame["annotator"].dropna().unique()}
    annotators = (
        None
        if known_annotators is None
        else sorted(present_annotators & {str(a) for a in known_annotators})
    )
    timestamp_cols = [c for c in ("created_at", "updated_at") if c in frame.columns]
    for column in timestamp_cols:
        frame[column] = _as_utc(frame[column])
    upper = (now or datetime.now(timezone.utc)).astimezone(timezone.utc) + FUTURE_SLACK

    def _submitted() -> Any:
        from great_expectations.expectations.row_conditions import Column

        return Column("status") == "submitted"

    checks = [
        _Check(lambda g: g.ExpectColumnValuesToNotBeNull(column="item_id"), "item_id",
               lambda r: "annotations without an item id", show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToBeInSet(column="item_known", value_set=[True]), "item_id",
               lambda r: "annotations for items not in the ledger (helper column item_known): "
               + unknown_items(), show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToNotBeNull(column="annotator"), "annotator",
               lambda r: "annotations without an annotator", show_values=False),
    ]
    if annotators is not None:
        checks.append(
            _Check(lambda g: g.ExpectColumnValuesToBeInSet(column="annotator", value_set=annotators),
                   "annotator", lambda r: "unknown annotators")
        )
    checks += [
        _Check(lambda g: g.ExpectColumnValuesToBeInSet(column="status", value_set=list(ANNOTATION_STATUSES)),
               "status", lambda r: f"status must be one of {list(ANNOTATION_STATUSES)}"),
        _Check(lambda g: g.ExpectColumnValuesToBeInSet(column="label", value_set=labels), "label",
               lambda r: f"labels outside the label set {labels}"),
        _Check(lambda g: g.ExpectColumnValuesToNotBeNull(column="label", row_condition=_submitted()),
               "label", lambda r: "submitted annotations without a label", show_values=False),
        _Check(
            lambda g: g.ExpectCompoundColumnsToBeUnique(
                column_list=["item_id", "annotator"], row_condition=_submitted()
            ),
            "item_id+annotator",
            lambda r: "more than one submitted annotation for the same (item_id, annotator)",
        ),
    ]
    for column in timestamp_cols:
        checks += [
            _Check(lambda g, c=column: g.ExpectColumnValuesToNotBeNull(column=c), column,
                   lambda r: "missing or unparseable timestamps", show_values=False),
            _Check(
                lambda g, c=column: g.ExpectColumnValuesToBeBetween(
                    column=c, min_value=EARLIEST_TIMESTAMP, max_value=upper
                ),
                column,
                lambda r: f"timestamps must lie between {EARLIEST_TIMESTAMP:%Y-%m-%d} and now + "
                f"{int(FUTURE_SLACK.total_seconds() // 60)} min ({upper:%Y-%m-%dT%H:%M:%SZ})",
            ),
        ]
    return _run_contract(contract, frame, checks, id_col=id_col, source=source)


def validate_training_set(
    df: pd.DataFrame,
    *,
    forbidden_ids: Iterable[str],
    min_per_class: int = 1,
    label_set: Sequence[str] | None = None,
    source: str = "",
) -> ValidationSummary:
    """The contract for the labels a model is about to be trained on (``id, label``).

    Rules: ids and labels present; no id in ``forbidden_ids`` (the frozen test and
    calibration items: training on them silently inflates every metric we report);
    no item with two different labels (unresolved disagreement must go to
    adjudication, not into the model); every class has at least ``min_per_class``
    rows. With ``label_set`` also: labels are in the set, and every class of the set
    is present when ``min_per_class`` ≥ 1 (a class with zero examples cannot be
    detected row by row).
    """
    contract = "training set"
    _require_columns(df, ["id", "label"], contract=contract, source=source)
    if min_per_class < 0:
        raise InputError(f"validate_training_set: min_per_class must be ≥ 0, got {min_per_class}")
    labels = _normalised_labels(label_set, source or "label_set")
    frame = df.reset_index(drop=True).copy()
    frame["in_test_or_calibration"] = _membership(frame["id"], forbidden_ids)
    frame["labels_per_id"] = frame.groupby("id", dropna=True)["label"].transform("nunique")
    frame["class_count"] = frame.groupby("label", dropna=True)["id"].transform("size")
    class_sizes = frame.dropna(subset=["label"]).groupby("label").size().to_dict()

    def _conflicts(result: dict[str, Any]) -> str:
        ids = list(dict.fromkeys(e.get("id") for e in result.get("unexpected_index_list") or []))
        conflicting = frame[frame["id"].isin(ids[:MAX_SAMPLE_IDS])]
        per_id = conflicting.groupby("id")["label"].apply(lambda s: sorted(set(s.dropna())))
        return "items with conflicting labels: " + ", ".join(
            f"{i}: {per_id[i]}" for i in ids[:MAX_SAMPLE_IDS] if i in per_id
        )

    def _small(result: dict[str, Any]) -> str:
        small = sorted((k, v) for k, v in class_sizes.items() if v < min_per_class)
        return f"classes below {min_per_class} examples: " + ", ".join(f"{k!r} ({v})" for k, v in small)

    checks = [
        _Check(lambda g: g.ExpectTableRowCountToBeBetween(min_value=1), None,
               lambda r: "the training set is empty", show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToNotBeNull(column="id"), "id",
               lambda r: "rows without an id", show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToNotBeNull(column="label"), "label",
               lambda r: "rows without a label", show_values=False),
    ]
    checks += [
        _Check(lambda g: g.ExpectColumnValuesToBeInSet(column="in_test_or_calibration", value_set=[False]),
               "id", lambda r: "frozen test/calibration items in the training set "
               "(helper column in_test_or_calibration)",
               show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToBeBetween(column="labels_per_id", max_value=1),
               "id", _conflicts, show_values=False),
        _Check(lambda g: g.ExpectColumnValuesToBeBetween(column="class_count", min_value=min_per_class),
               "label", _small, show_values=False),
    ]
    if labels is not None:
        checks.append(
            _Check(lambda g: g.ExpectColumnValuesToBeInSet(column="label", value_set=labels), "label",
                   lambda r: f"labels outside the label set {labels}")
        )
        if min_per_class >= 1:
            checks.append(
                _Check(
                    lambda g: g.ExpectColumnDistinctValuesToContainSet(column="label", value_set=labels),
                    "label",
                    lambda r: "classes with no examples: "
                    + ", ".join(repr(x) for x in labels if x not in class_sizes),
                    show_values=False,
                    count=lambda r: sum(x not in class_sizes for x in labels),
                )
            )
    return _run_contract(contract, frame, checks, id_col="id", source=source)
