"""Reading input tables (CSV/TSV, Parquet, JSON Lines) into one canonical frame.

Why this module exists: every later stage (seeding, querying, the ledger, the data
contracts) wants the same five columns whatever the user handed us, and a bad file
must be stopped here with a message a user can act on ("pool.csv, line 7: ...")
instead of a pandas traceback three stages later.

What it deliberately does *not* do: decide whether the data is acceptable. Empty
texts, duplicate ids or labels outside the label set are loaded as they are and
reported by the Great Expectations contracts in ``integrations/expectations.py``,
which can list every offender at once. This module only rejects what it cannot
read at all (missing file, unknown format, broken CSV/JSON, wrong encoding,
missing columns, no rows).

Returned frame (``load_table``), one row per input record, in file order:

========== =================================================================
id         str, NFC-normalised and stripped; None when missing/blank
text       str as written (not stripped: the model sees what the user wrote);
           None when missing (JSONL/Parquet null); "" for an empty CSV cell
label      str (NFC, stripped) or None when absent/blank/no label column
source_file the file the row came from (as a path string)
source_row 1-based data-row number (CSV/TSV: header excluded, a quoted
           multi-line record counts once; JSONL: the physical line number;
           Parquet: the row number)
========== =================================================================

``id``/``text``/``label``/``source_file`` have object dtype (None for missing) so
all three readers give identical frames; ``source_row`` is int64.
"""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import json
import math
import os
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from labelloop.tasks.errors import LabelloopError

__all__ = [
    "DELIMITERS",
    "InputError",
    "SUPPORTED_EXTENSIONS",
    "check_encoding",
    "sniff_file_kind",
    "derive_id",
    "load_table",
    "normalise_id",
]

CSV_EXTENSIONS = {".csv": ",", ".tsv": "\t"}
PARQUET_EXTENSIONS = (".parquet", ".pq")
JSONL_EXTENSIONS = (".jsonl", ".ndjson")
SUPPORTED_EXTENSIONS: tuple[str, ...] = (*CSV_EXTENSIONS, *PARQUET_EXTENSIONS, *JSONL_EXTENSIONS)
OUTPUT_COLUMNS = ["id", "text", "label", "source_file", "source_row"]
DELIMITERS: dict[str, str] = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
"""Delimiters the CSV reader sniffs between (and the only ones ``[data] delimiter`` accepts)."""
_MAX_REPORTED = 10  # how many offending items an error message lists


class InputError(LabelloopError, ValueError):
    """Bad input that could not be read; the message names file, row/line and field.

    Subclasses ValueError so callers that only know "bad value" still catch it.
    ``path``/``line``/``field`` are kept as attributes for programs (CLI exit codes,
    UI highlighting); the message is meant for people.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field


# --------------------------------------------------------------------------- helpers


def normalise_id(value: Any) -> str | None:
    """Canonical form of an item id: ``str``, Unicode NFC, surrounding whitespace removed.

    Why: ids typed or exported by different tools differ invisibly (" a1" vs "a1",
    a precomposed "é" vs "e" + combining accent). Normalising makes such ids *equal*,
    so the pool contract reports them as duplicates instead of the ledger storing two
    items that a human would call the same. Blank ids become None (reported as
    missing by the contract).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = unicodedata.normalize("NFC", str(value)).strip()
    return text or None


def _normalise_label(value: Any) -> str | None:
    """Labels get the same treatment as ids: the label set is normalised the same way
    (see ``expectations.validate_label_set``), so "pos " in a CSV still means "pos"."""
    return normalise_id(value)


def derive_id(text: str | None) -> str | None:
    """A stable id for a text: ``"txt-"`` + the first 16 hex digits of SHA-256 of the
    NFC-normalised, stripped text.

    Why a hash: without an id column the only stable identity of a row is its content;
    row numbers change when the file is re-exported or sorted. Consequences a user
    should know: editing a text gives it a new id, and identical texts get the same
    id — the pool contract then reports them as duplicates, which is what we want
    (the same text twice in a pool wastes annotation budget and leaks across splits).
    64 bits of hash make an accidental collision negligible below billions of rows.
    """
    if text is None:
        return None
    canonical = unicodedata.normalize("NFC", text).strip()
    return "txt-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _preview(values: Iterable[Any], limit: int = _MAX_REPORTED) -> str:
    items = list(values)
    shown = ", ".join(repr(v) for v in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _scalar_to_str(value: Any, *, path: Path, where: str, field: str) -> str | None:
    """Turn a JSON/Parquet cell into str or None; nested values are an input error."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        # JSON true/false as an id or a text is almost surely a mistake in the export.
        raise InputError(
            f"{path}: {where}, field {field!r}: expected a string, got a boolean ({value!r})",
            path=path,
            field=field,
        )
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    raise InputError(
        f"{path}: {where}, field {field!r}: expected a string, got {type(value).__name__} "
        f"({str(value)[:60]!r})",
        path=path,
        field=field,
    )


def _locate_decode_error(path: Path, encoding: str) -> tuple[int, int, bytes] | None:
    """Find (byte offset, line, offending bytes) of the first undecodable byte.

    Why not trust the exception pandas raises: its ``start`` is an offset inside the
    current read buffer, not inside the file. Re-decoding incrementally is cheap and
    only happens on the error path.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    newlines = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.start is relative to the decoder's buffered input + this chunk;
                # buffered input is at most a few bytes for multi-byte encodings.
                pending = len(exc.object) - len(chunk)
                bad_offset = offset - pending + exc.start
                with open(path, "rb") as again:
                    head = again.read(bad_offset)
                    bad = again.read(max(1, exc.end - exc.start))
                return bad_offset, head.count(b"\n") + 1, bad
            newlines += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return offset, newlines + 1, b""
    return None


def _encoding_error(path: Path, encoding: str, exc: UnicodeError) -> InputError:
    located = None
    try:
        located = _locate_decode_error(path, encoding)
    except (OSError, LookupError):
        located = None
    hint = "latin-1" if encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig") else "utf-8"
    if located:
        offset, line, bad = located
        where = f"byte offset {offset} (line {line})"
        bad_repr = f" (bytes {bad.hex(' ')})" if bad else ""
        return InputError(
            f"{path}: cannot decode as {encoding} at {where}{bad_repr}. The file is in another "
            f"encoding: {encoding_advice(hint)}.",
            path=path,
            line=line,
        )
    return InputError(
        f"{path}: cannot decode as {encoding} ({exc}). Name the file's encoding: {encoding_advice(hint)}.",
        path=path,
    )


def encoding_advice(encoding: str) -> str:
    """How a user names an encoding, in the words of the two commands that read files.

    Why not "pass encoding=...": people meet these errors in the CLI, where the only
    handles are the config key and the simulate flag.
    """
    return f'set [data] encoding = "{encoding}" in the campaign config (labelloop simulate: --encoding {encoding})'


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it, else InputError (used by the config and load_table)."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r} (try 'utf-8', 'utf-16', 'cp1252' or 'latin-1')",
                         field="encoding") from None
    return encoding


_KIND_NAMES = {
    "xlsx": "an Excel workbook (.xlsx: a ZIP archive of XML sheets)",
    "xls": "an Excel 97-2003 workbook (.xls)",
    "zip": "a ZIP archive",
    "parquet": "a Parquet file",
    "gzip": "a gzip-compressed file",
    "png": "a PNG image",
    "pdf": "a PDF document",
}
_KIND_ADVICE = {
    "xlsx": "open it in Excel and save it as 'CSV UTF-8', or export the sheet to Parquet",
    "xls": "open it in Excel and save it as 'CSV UTF-8'",
    "zip": "extract it and point [data] path at the table inside",
    "parquet": "rename it to .parquet",
    "gzip": "decompress it first (gunzip)",
    "png": "point [data] path at the table, not at an image",
    "pdf": "point [data] path at the table, not at a document",
}
_BOMS = (  # longest first: a UTF-32-LE BOM starts with the UTF-16-LE one
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def sniff_file_kind(path: Path) -> str | None:
    """What a file's first bytes say it really is, when that is not plain 8-bit/UTF-8 text.

    One of ``xlsx``, ``xls``, ``zip``, ``parquet``, ``gzip``, ``png``, ``pdf`` (magic
    numbers), ``utf-16-le``/``utf-16-be``/``utf-32-le``/``utf-32-be`` (byte-order mark),
    ``nul`` (NUL bytes without a BOM: binary, or UTF-16/32 without a BOM), or None.

    Why: the extension is what the user *called* the file. A workbook renamed ``.csv``
    or a UTF-16 export otherwise surfaces as "cannot decode as utf-8 at byte 2", which
    sends people looking for a bad character that is not there.
    """
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        return "xlsx" if any(n.startswith("xl/") for n in names) else "zip"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "xls"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"%PDF"):
        return "pdf"
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    if b"\x00" in head:
        return "nul"
    return None


def _is_wide_encoding(encoding: str) -> bool:
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def _check_text_file(path: Path, encoding: str, what: str) -> None:
    """Stop a text reader early, with the file's real nature, when it is not ``encoding`` text."""
    kind = sniff_file_kind(path)
    if kind is None:
        return
    if kind in _KIND_NAMES:
        raise InputError(
            f"{path}: this is {_KIND_NAMES[kind]}, not a {what} file (whatever its extension says): "
            f"{_KIND_ADVICE[kind]}",
            path=path,
        )
    if _is_wide_encoding(encoding):
        return  # the user said UTF-16/32; Python's codec handles the BOM (or its absence)
    if kind == "nul":
        with open(path, "rb") as fh:
            offset = fh.read(4096).index(b"\x00")
        raise InputError(
            f"{path}: has a NUL byte at byte offset {offset}: it is binary, or UTF-16/32 text without a "
            f"byte-order mark; if it is text, {encoding_advice('utf-16-le')}",
            path=path,
        )
    family = kind[:6]  # utf-16 / utf-32: the codec without an endianness reads the BOM itself
    raise InputError(
        f"{path}: is {kind.upper()} text (it starts with a {family.upper()} byte-order mark), not {encoding}: "
        f"{encoding_advice(family)}, or save the file as UTF-8",
        path=path,
    )


def _missing_columns_error(
    path: Path, available: Sequence[str], wanted: dict[str, str], sep: str | None = None
) -> InputError | None:
    """wanted maps argument name (id_col, ...) to column name; ``sep``: the CSV delimiter used."""
    missing = [(arg, col) for arg, col in wanted.items() if col not in available]
    if not missing:
        return None
    desc = ", ".join(f"{col!r} ({arg})" for arg, col in missing)
    hint = ""
    if sep is not None and len(available) == 1:
        other = [d for d in DELIMITERS if d != sep and d in available[0]]
        if other:
            hint = (f" Read with delimiter {sep!r} ({DELIMITERS[sep]}) the header is one column; it looks "
                    f"{DELIMITERS[other[0]]}-separated: set [data] delimiter = {other[0]!r}"
                    f" (labelloop simulate: --delimiter {other[0]!r}).")
    return InputError(
        f"{path}: missing column(s) {desc}; available columns: {_preview(available, 50)}.{hint}",
        path=path,
        field=missing[0][1],
    )


def _encoding_for_text(encoding: str) -> str:
    """Accept a UTF-8 byte-order mark when reading UTF-8: Excel writes one, and it would
    otherwise become part of the first column name or break the first JSON line."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


# --------------------------------------------------------------------------- readers


def _csv_record_start_line(path: Path, sep: str, encoding: str, record: int) -> int | None:
    """Physical line (1-based) on which CSV record ``record`` (0 = header) starts.

    pandas reports positions in records, and a quoted multi-line text makes records and
    lines differ; users open the file in an editor, so we translate. Uses the stdlib
    csv module, which reads the well-formed records before the broken one fine.
    """
    old_limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        with open(path, encoding=_encoding_for_text(encoding), newline="") as fh:
            reader = csv.reader(fh, delimiter=sep)
            last_line = 0
            for index, _ in enumerate(reader):
                if index == record:
                    return last_line + 1
                last_line = reader.line_num
            return last_line + 1 if record >= 0 else None
    except (csv.Error, OSError, UnicodeError):
        return None
    finally:
        csv.field_size_limit(old_limit)


def _header_line(path: Path, encoding: str) -> str | None:
    try:
        with open(path, encoding=_encoding_for_text(encoding), newline="") as fh:
            return fh.readline().lstrip("\ufeff").rstrip("\r\n")
    except (OSError, UnicodeError):
        return None  # the reader reports it, with the position


def _split_header(line: str, sep: str) -> list[str]:
    try:
        return [f.strip() for f in next(csv.reader([line], delimiter=sep), [])]
    except csv.Error:
        return []


def sniff_delimiter(path: Path, encoding: str, columns: Sequence[str]) -> str:
    """The delimiter of a CSV file, judged on its header line.

    Why the header and the expected column names rather than ``csv.Sniffer``: the
    sniffer guesses from character frequencies over whole lines, and free text (the
    very thing this tool classifies) is full of commas and semicolons. The header is
    short and we know which names it should hold: the delimiter that splits out the
    most of them wins; failing that, the one that gives the most fields; ties go to
    the comma.
    """
    line = _header_line(path, encoding)
    if not line:
        return ","
    scores = []
    for order, sep in enumerate(DELIMITERS):
        fields = _split_header(line, sep)
        scores.append((sum(c in fields for c in columns), len(fields), -order, sep))
    best = max(scores)
    return best[3] if best[1] > 1 or best[0] else ","


def _other_delimiter(path: Path, sep: str, encoding: str) -> str | None:
    """A delimiter other than ``sep`` that splits the header into more fields (for error hints)."""
    line = _header_line(path, encoding)
    if not line:
        return None
    used = len(_split_header(line, sep))
    best = max(((len(_split_header(line, d)), d) for d in DELIMITERS if d != sep), default=(0, None))
    return best[1] if best[0] > max(used, 1) else None


def _header_columns(path: Path, sep: str, encoding: str) -> list[str] | None:
    """The column names of a CSV file as pandas would read them, from its header line alone.

    Why: a missing column should fail at once, not after parsing every row of a large file
    (issue 18: < 3 s on 10,000 rows). ``None`` (no early verdict, the full read decides)
    when the header holds a quote (a quoted name may span lines) or no data row follows it
    (the full read reports "no data rows" first, as before).
    """
    try:
        with open(path, encoding=_encoding_for_text(encoding), newline="") as fh:
            header = fh.readline().lstrip("\ufeff").rstrip("\r\n")
            has_row = any(line.strip() for line in iter(fh.readline, ""))
    except (OSError, UnicodeError):
        return None
    if not header or '"' in header or not has_row:
        return None
    try:
        return next(csv.reader([header], delimiter=sep), None)
    except csv.Error:
        return None


def _refuse_repeated_columns(path: Path, sep: str, encoding: str, wanted: dict[str, str]) -> None:
    """A wanted column named twice in the header: pandas would read the second as ``text.1`` and use
    the first without a word. The header is read as CSV (quoted names too, as R's write.csv writes
    them) and compared exactly, as pandas matches names."""
    try:
        with open(path, encoding=_encoding_for_text(encoding), newline="") as fh:
            header = next(csv.reader(fh, delimiter=sep), [])
    except (OSError, UnicodeError, csv.Error):
        return  # the full read above already judged the file readable; nothing more to say here
    header = [h.lstrip("\ufeff") for h in header]
    for key, name in wanted.items():
        at = [i + 1 for i, h in enumerate(header) if h == name]
        if len(at) > 1:
            raise InputError(f"{path}: line 1 (header): column {name!r} ({key}) appears {len(at)} times "
                             f"(columns {', '.join(map(str, at))}); keep one", path=path, line=1, field=name)


def _read_csv(path: Path, sep: str, encoding: str, wanted: dict[str, str] | None = None) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); expected a header row and data rows", path=path)
    _check_text_file(path, encoding, "CSV" if sep != "\t" else "TSV")
    header = _header_columns(path, sep, encoding) if wanted else None
    if header is not None:
        error = _missing_columns_error(path, header, wanted, sep)
        if error:
            raise error
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            na_filter=False,  # "NA"/"null" are texts here; blanks are handled below
            encoding=_encoding_for_text(encoding),
            skip_blank_lines=True,
        )
    except UnicodeError as exc:
        raise _encoding_error(path, encoding, exc) from None
    except pd.errors.EmptyDataError:
        raise InputError(
            f"{path}: file has no header and no data (only blank lines)", path=path
        ) from None
    except pd.errors.ParserError as exc:
        raise _csv_parser_error(path, sep, encoding, exc) from None
    frame.columns = [str(c).lstrip("\ufeff") for c in frame.columns]  # a BOM read by a codec that keeps it
    if wanted:
        _refuse_repeated_columns(path, sep, encoding, wanted)
    if frame.empty:
        raise InputError(
            f"{path}: has a header ({_preview(frame.columns)}) but no data rows", path=path
        )
    return frame


def _csv_parser_error(path: Path, sep: str, encoding: str, exc: Exception) -> InputError:
    message = str(exc).strip()
    kind = "TSV" if sep == "\t" else "CSV"
    other = _other_delimiter(path, sep, encoding)
    eof = re.search(r"EOF inside string starting at row (\d+)", message)
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if eof:
        data_row = int(eof.group(1))  # pandas: 0-based record index, header = record 0
        line = _csv_record_start_line(path, sep, encoding, data_row)
        at = f"line {line} (data row {data_row})" if line else f"data row {data_row}"
        return InputError(
            f"{path}: malformed {kind}: a quoted field opened at {at} is never closed "
            f"(unbalanced '\"'); everything after it would be read as one text",
            path=path,
            line=line,
        )
    if fields:
        expected, record, saw = int(fields.group(1)), int(fields.group(2)), int(fields.group(3))
        data_row = record - 1  # pandas: 1-based record number, header = record 1
        line = _csv_record_start_line(path, sep, encoding, data_row)
        at = f"line {line} (data row {data_row})" if line else f"data row {data_row}"
        if other is not None:
            advice = (f"read with delimiter {sep!r} ({DELIMITERS.get(sep, sep)}), but the file looks "
                      f"{DELIMITERS[other]}-separated: set [data] delimiter = {other!r} "
                      f"(labelloop simulate: --delimiter {other!r})")
        else:
            advice = f"quote texts that contain the delimiter {sep!r} ({DELIMITERS.get(sep, sep)})"
        return InputError(
            f"{path}: malformed {kind} at {at}: {saw} fields but the header has {expected}; {advice}",
            path=path,
            line=line,
        )
    return InputError(f"{path}: malformed {kind}: {message}", path=path)


def _read_jsonl(path: Path, encoding: str, fields: Sequence[str], text_field: str) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); expected one JSON object per line", path=path)
    _check_text_file(path, encoding, "JSON Lines")
    columns: dict[str, list[Any]] = {f: [] for f in fields}
    rows: list[int] = []
    seen_keys: dict[str, None] = {}
    try:
        with open(path, encoding=_encoding_for_text(encoding), newline=None) as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                line = line.rstrip("\r\n")
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{path}: line {line_no}: not valid JSON ({exc.msg} at column {exc.colno}): "
                        f"{line.strip()[:80]!r}",
                        path=path,
                        line=line_no,
                    ) from None
                if not isinstance(record, dict):
                    raise InputError(
                        f"{path}: line {line_no}: expected a JSON object {{...}}, got "
                        f"{type(record).__name__}: {line.strip()[:80]!r}",
                        path=path,
                        line=line_no,
                    )
                for key in record:
                    seen_keys.setdefault(key, None)
                for f in fields:
                    # a key missing from one line is a missing value (the contract
                    # reports it with this row); missing from every line is an error.
                    value = record.get(f)
                    if f == text_field and value is not None and not isinstance(value, str):
                        raise InputError(
                            f"{path}: line {line_no}, field {f!r}: expected a text (JSON string), got "
                            f"{type(value).__name__} {json.dumps(value)[:60]}",
                            path=path, line=line_no, field=f,
                        )
                    columns[f].append(
                        _scalar_to_str(value, path=path, where=f"line {line_no}", field=f)
                    )
                rows.append(line_no)
    except UnicodeError as exc:
        raise _encoding_error(path, encoding, exc) from None
    if not rows:
        raise InputError(f"{path}: no JSON records (only blank lines)", path=path)
    frame = pd.DataFrame({f: pd.Series(v, dtype=object) for f, v in columns.items()})
    frame.attrs["available_columns"] = list(seen_keys)
    frame.attrs["source_rows"] = rows
    return frame


def _read_parquet(path: Path, fields: Sequence[str], wanted: dict[str, str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); expected a Parquet file", path=path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        kind = sniff_file_kind(path)
        what = f"it is {_KIND_NAMES[kind]}" if kind in _KIND_NAMES else (
            "it starts like a text file: CSV or JSON Lines named .parquet?" if kind is None else f"it is {kind} text")
        raise InputError(f"{path}: not a readable Parquet file ({what}; {exc})", path=path) from None
    error = _missing_columns_error(path, schema.names, wanted)
    if error:
        raise error
    text_col = wanted["text_col"]
    text_type = schema.field(text_col).type
    if pa.types.is_dictionary(text_type):
        text_type = text_type.value_type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type) or pa.types.is_null(text_type)
            or getattr(pa.types, "is_string_view", lambda t: False)(text_type)):
        sample = pq.read_table(path, columns=[text_col]).column(text_col).slice(0, 3).to_pylist()
        raise InputError(
            f"{path}: column {text_col!r} (text_col) holds {text_type} values, not texts (first: "
            f"{', '.join(map(repr, sample))}); they would be classified as the strings "
            f"{', '.join(repr(str(v)) for v in sample)}. Point [data] text_column at the column with the texts, "
            f"or write this one as a string column",
            path=path,
            field=text_col,
        )
    try:
        table = pq.read_table(path, columns=list(dict.fromkeys(fields)))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: could not read Parquet data ({exc})", path=path) from None
    if table.num_rows == 0:
        raise InputError(
            f"{path}: has columns ({_preview(schema.names)}) but no data rows", path=path
        )
    data: dict[str, pd.Series] = {}
    for f in dict.fromkeys(fields):
        values = table.column(f).to_pylist()
        data[f] = pd.Series(
            [
                _scalar_to_str(v, path=path, where=f"row {i}", field=f)
                for i, v in enumerate(values, start=1)
            ],
            dtype=object,
        )
    return pd.DataFrame(data)


def _load_file(
    path: Path, *, id_col: str | None, text_col: str, label_col: str | None, encoding: str,
    delimiter: str | None = None,
) -> pd.DataFrame:
    suffix = path.suffix.lower()
    wanted: dict[str, str] = {}
    if id_col is not None:
        wanted["id_col"] = id_col
    wanted["text_col"] = text_col
    if label_col is not None:
        wanted["label_col"] = label_col
    fields = list(dict.fromkeys(wanted.values()))

    if suffix in CSV_EXTENSIONS:
        sep = delimiter or (CSV_EXTENSIONS[suffix] if suffix == ".tsv" else sniff_delimiter(path, encoding, fields))
        raw = _read_csv(path, sep, encoding, wanted)
        error = _missing_columns_error(path, list(raw.columns), wanted, sep)
        if error:
            raise error
        raw = raw[fields].astype(object)
        source_rows: list[int] = list(range(1, len(raw) + 1))
    elif suffix in JSONL_EXTENSIONS:
        raw = _read_jsonl(path, encoding, fields, text_col)
        available = raw.attrs["available_columns"]
        error = _missing_columns_error(path, available, wanted)
        if error:
            raise error
        source_rows = raw.attrs["source_rows"]
    elif suffix in PARQUET_EXTENSIONS:
        raw = _read_parquet(path, fields, wanted)
        source_rows = list(range(1, len(raw) + 1))
    else:
        raise InputError(
            f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}",
            path=path,
        )

    texts = [None if (t is None or t is pd.NA) else str(t) for t in raw[text_col].tolist()]
    if id_col is None:
        ids = [derive_id(t) for t in texts]
    else:
        ids = [normalise_id(v) for v in raw[id_col].tolist()]
    if label_col is None:
        labels: list[str | None] = [None] * len(raw)
    else:
        labels = [_normalise_label(v) for v in raw[label_col].tolist()]
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype=object),
            "text": pd.Series(texts, dtype=object),
            "label": pd.Series(labels, dtype=object),
            "source_file": pd.Series([str(path)] * len(raw), dtype=object),
            "source_row": pd.Series(source_rows, dtype="int64"),
        }
    )


def _files_in(folder: Path, *, skip_unsupported: bool = False) -> tuple[list[Path], list[str]]:
    """Supported files directly inside ``folder`` sorted by name (hidden files skipped), and the
    names of the other entries that were skipped.

    Why other files are an error by default: a ``.txt`` or ``.xlsx`` in the data folder is
    usually part of the data in a format we do not read; skipping it without a word
    would silently train on a fraction of the pool. ``skip_unsupported`` (the
    ``[data] skip_unsupported_files`` key) says the user knows.
    """
    files: list[Path] = []
    others: list[str] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        try:
            p.stat()
        except OSError as exc:
            raise _unreadable_path_error(p, exc) from None
        if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS:
            files.append(p)
        else:
            others.append(p.name + ("/" if p.is_dir() else ""))
    if others and files and not skip_unsupported:
        raise InputError(
            f"{folder}: folder holds entries labelloop does not read: {_preview(others)} (it reads "
            f"{', '.join(SUPPORTED_EXTENSIONS)} files, not sub-folders); move them out, convert them, or set "
            f"[data] skip_unsupported_files = true to skip them",
            path=folder,
        )
    if not files:
        others = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        raise InputError(
            f"{folder}: folder has no {'/'.join(SUPPORTED_EXTENSIONS)} files"
            + (f" (it contains: {_preview(others)})" if others else " (it is empty)"),
            path=folder,
        )
    return files, others


def _unreadable_path_error(path: Path, exc: OSError) -> InputError:
    """A path that cannot even be stat-ed: a symlink loop, a dangling link, missing, no permission."""
    if exc.errno == errno.ELOOP:
        return InputError(f"{path}: is a symbolic link loop (following its links leads back to it); "
                          f"point [data] path at the real file", path=path)
    if path.is_symlink():
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return InputError(f"{path}: is a symbolic link to {target!r}, which does not exist", path=path)
    if exc.errno == errno.ENOENT:
        return InputError(f"{path}: no such file or folder", path=path)
    return InputError(f"{path}: cannot read ({exc.strerror or exc})", path=path)


# --------------------------------------------------------------------------- public API


def load_table(
    path: str | Path,
    *,
    id_col: str | None,
    text_col: str,
    label_col: str | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    skip_unsupported: bool = False,
) -> pd.DataFrame:
    """Read a CSV/TSV, Parquet or JSON Lines file — or every such file in a folder —
    into the canonical frame ``id, text, label, source_file, source_row``.

    Args:
        path: a ``.csv``/``.tsv``/``.parquet``/``.pq``/``.jsonl``/``.ndjson`` file, or a
            folder: its supported files (not sub-folders) are read in name order and
            concatenated; ``source_file`` records where each row came from.
        id_col: column holding item ids. ``None`` derives each id from a stable hash of
            the text (``derive_id``: ``"txt-"`` + 16 hex digits of SHA-256 of the NFC,
            stripped text) — identical texts then share an id and are reported as
            duplicates by the pool contract.
        text_col: column holding the text to classify.
        label_col: optional column with known labels (seed/test sets); blank → None.
        encoding: text encoding of CSV/TSV/JSONL files (a UTF-8 BOM is accepted; a file that
            starts with a UTF-16/32 byte-order mark, or is really a workbook, ZIP, Parquet, ...
            file, is reported as what it is).
        delimiter: CSV field delimiter; None sniffs it from the header of each ``.csv`` file
            (``sniff_delimiter``; ``.tsv`` files use a tab). Errors that look like a wrong
            delimiter name the one used and the one the file seems to use.
        skip_unsupported: for a folder: skip files of other types instead of failing on them
            (the skipped names are in ``frame.attrs["skipped_files"]``).

    Ids are normalised (``normalise_id``: NFC + strip) but *not* de-duplicated: " a1"
    and "a1" both come back as "a1" and the pool contract reports the duplicate. Rows
    are not otherwise judged here (see module docstring).

    Raises:
        InputError: file/folder missing, unknown extension, malformed CSV (names the
            line), malformed JSON line (names the line), undecodable bytes (names the
            byte offset and line and suggests ``encoding=``), missing columns (lists the
            available ones), empty or header-only file. Nothing is returned on error,
            also for folders: one bad file fails the whole load.
    """
    path = Path(path)
    if not text_col:
        raise InputError("load_table: text_col must name a column", field="text_col")
    check_encoding(encoding)
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(
            delimiter.lower(), delimiter)
    if delimiter is not None and delimiter not in DELIMITERS:
        raise InputError(f"unknown delimiter {delimiter!r}; one of {', '.join(map(repr, DELIMITERS))}",
                         field="delimiter")
    try:
        path.stat()
    except OSError as exc:
        raise _unreadable_path_error(path, exc) from None
    files, skipped = _files_in(path, skip_unsupported=skip_unsupported) if path.is_dir() else ([path], [])
    frames = []
    for file in files:
        try:
            frames.append(
                _load_file(file, id_col=id_col, text_col=text_col, label_col=label_col, encoding=encoding,
                           delimiter=delimiter)
            )
        except OSError as exc:  # permissions, a file vanishing mid-read, ...
            raise InputError(f"{file}: cannot read ({exc.strerror or exc})", path=file) from None
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame = frame[OUTPUT_COLUMNS].reset_index(drop=True)
    frame.attrs["skipped_files"] = skipped
    return frame


def load_table_maybe_unlabelled(path: str | Path, *, id_col: str | None, text_col: str, label_col: str | None,
                                label_optional: bool, **kwargs: object) -> pd.DataFrame:
    """:func:`load_table`; when ``label_optional`` and the label column is the only one missing, the
    file is read as unlabelled text (``attrs["unlabelled"]`` True) instead of refused.

    Why optional only for the default column name: a corpus arrives without labels, and people
    label it; but a label column the user *named* and mistyped must not silently turn a labelled
    file into hundreds of labelling tasks.
    """
    try:
        return load_table(path, id_col=id_col, text_col=text_col, label_col=label_col, **kwargs)  # type: ignore[arg-type]
    except InputError as err:
        msg = str(err)
        only_label = (label_col and err.field == label_col and "(label_col)" in msg and "(text_col)" not in msg
                      and "(id_col)" not in msg)
        if not (label_optional and only_label):
            raise
    frame = load_table(path, id_col=id_col, text_col=text_col, label_col=None, **kwargs)  # type: ignore[arg-type]
    frame.attrs["unlabelled"] = True
    return frame
