"""Label schema versions: renaming, merging and splitting labels without mixing sets.

Why versions: a campaign that runs for weeks changes its label set ("technical"
becomes "tech", "feedback" is merged into "account", "account" is split into
"login" and "profile"). Labels given under the old set must then either be
*mapped* to the new set (rename, merge: the old answer still determines the new
one) or *flagged for re-labelling* (split, removal: the old answer does not
say which new label applies). What must never happen is that "account" under
version 1 and "account" under version 2 are counted as the same vote.

A :class:`LabelHistory` holds every version of the label set and, for each
version after the first, a :class:`Migration` from the version before:
``mapping[old_label] -> new_label`` or ``None`` (re-label). Migrations compose,
so an annotation given under version 1 maps to version 3 through 2.

Pure functions only (no I/O); the trust flow stores versions in the ledger
(``label_versions``) and stamps each annotation with the version it was given
under.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import pandas as pd

from labelloop.tasks.errors import LabelloopError

__all__ = [
    "LabelSchemaError",
    "LabelSchema",
    "Migration",
    "LabelHistory",
    "rename",
    "merge",
    "split",
    "add_labels",
    "remove_labels",
    "make_migration",
    "compose",
    "history_from_config",
    "migrate_labels",
]


class LabelSchemaError(LabelloopError, ValueError):
    """A label schema or migration is inconsistent, or labels of unknown versions were given."""


@dataclass(frozen=True)
class LabelSchema:
    version: int
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.version < 1:
            raise LabelSchemaError(f"label set versions start at 1, got {self.version}")
        if len(self.names) < 2:
            raise LabelSchemaError(f"label set version {self.version} needs at least 2 labels, got {list(self.names)}")
        dupes = sorted({n for n in self.names if self.names.count(n) > 1})
        if dupes:
            raise LabelSchemaError(f"label set version {self.version} has duplicate labels {dupes}")
        if any(not str(n).strip() for n in self.names):
            raise LabelSchemaError(f"label set version {self.version} has an empty label name")


@dataclass(frozen=True)
class Migration:
    """How labels of ``from_version`` become labels of ``to_version``.

    ``mapping`` has one entry per label of the old version: the new label, or
    ``None`` when an answer under the old version cannot be mapped (the label
    was split or removed) and the item must be labelled again.
    """

    from_version: int
    to_version: int
    mapping: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def relabel(self) -> list[str]:
        """Old labels whose answers need re-labelling."""
        return [k for k, v in self.mapping.items() if v is None]

    def to_dict(self) -> dict:
        return {"from_version": self.from_version, "to_version": self.to_version, "mapping": dict(self.mapping)}


# --------------------------------------------------------------------------- building new versions


def make_migration(old: LabelSchema, new: LabelSchema, explicit: Mapping[str, str | None] | None = None) -> Migration:
    """The migration from ``old`` to ``new``.

    A label present in both maps to itself; ``explicit`` overrides that and
    maps old labels to new ones (``None`` or ``""``: re-label). Any other old
    label (gone from the new set and not mapped) is flagged for re-labelling:
    never guessed.
    """
    if new.version <= old.version:
        raise LabelSchemaError(f"a new label set version must be above {old.version}, got {new.version}")
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - set(old.names))
    if unknown:
        raise LabelSchemaError(f"mapping from version {old.version} names labels not in that version: {unknown} "
                               f"(version {old.version} has {list(old.names)})")
    bad = sorted({v for v in explicit.values() if v not in (None, "") and v not in new.names})
    if bad:
        raise LabelSchemaError(f"mapping to version {new.version} targets labels not in that version: {bad} "
                               f"(version {new.version} has {list(new.names)})")
    mapping: dict[str, str | None] = {}
    for name in old.names:
        if name in explicit:
            mapping[name] = explicit[name] or None
        else:
            mapping[name] = name if name in new.names else None
    return Migration(old.version, new.version, mapping)


def _next(schema: LabelSchema, names: Iterable[str], version: int | None) -> LabelSchema:
    return LabelSchema(version if version is not None else schema.version + 1, tuple(names))


def rename(schema: LabelSchema, renames: Mapping[str, str], version: int | None = None) -> tuple[LabelSchema, Migration]:
    """Rename labels (order kept). Answers map one to one."""
    missing = sorted(set(renames) - set(schema.names))
    if missing:
        raise LabelSchemaError(f"cannot rename {missing}: not in label set version {schema.version}")
    new = _next(schema, [renames.get(n, n) for n in schema.names], version)
    return new, make_migration(schema, new, dict(renames))


def merge(schema: LabelSchema, sources: Sequence[str], into: str, version: int | None = None) -> tuple[LabelSchema, Migration]:
    """Merge ``sources`` into one label ``into`` (placed where the first source was). Answers map."""
    missing = sorted(set(sources) - set(schema.names))
    if missing:
        raise LabelSchemaError(f"cannot merge {missing}: not in label set version {schema.version}")
    if not sources:
        raise LabelSchemaError("a merge needs at least one label to merge")
    names: list[str] = []
    for n in schema.names:
        if n in sources:
            if into not in names:
                names.append(into)
        elif n == into:
            if into not in names:
                names.append(into)
        else:
            names.append(n)
    new = _next(schema, names, version)
    return new, make_migration(schema, new, {s: into for s in sources})


def split(schema: LabelSchema, source: str, into: Sequence[str], version: int | None = None) -> tuple[LabelSchema, Migration]:
    """Split ``source`` into several labels. Old ``source`` answers need re-labelling."""
    if source not in schema.names:
        raise LabelSchemaError(f"cannot split {source!r}: not in label set version {schema.version}")
    if len(into) < 2:
        raise LabelSchemaError("a split needs at least two new labels")
    clash = sorted(set(into) & (set(schema.names) - {source}))
    if clash:
        raise LabelSchemaError(f"split targets {clash} already exist in version {schema.version}; use merge")
    names: list[str] = []
    for n in schema.names:
        names.extend(into if n == source else [n])
    new = _next(schema, names, version)
    return new, make_migration(schema, new, {source: None})


def add_labels(schema: LabelSchema, names: Sequence[str], version: int | None = None) -> tuple[LabelSchema, Migration]:
    """Add labels. Old answers keep their labels (they were given without the new option:
    this is still a new version, so the two sets are never mixed unknowingly)."""
    new = _next(schema, [*schema.names, *names], version)
    return new, make_migration(schema, new)


def remove_labels(schema: LabelSchema, names: Sequence[str], version: int | None = None) -> tuple[LabelSchema, Migration]:
    """Remove labels. Old answers with a removed label need re-labelling."""
    missing = sorted(set(names) - set(schema.names))
    if missing:
        raise LabelSchemaError(f"cannot remove {missing}: not in label set version {schema.version}")
    new = _next(schema, [n for n in schema.names if n not in names], version)
    return new, make_migration(schema, new)


def compose(first: Migration, second: Migration) -> Migration:
    """``first`` then ``second`` (v1→v2 then v2→v3 gives v1→v3)."""
    if first.to_version != second.from_version:
        raise LabelSchemaError(f"cannot compose {first.from_version}→{first.to_version} with "
                               f"{second.from_version}→{second.to_version}")
    mapping = {k: (None if v is None else second.mapping.get(v)) for k, v in first.mapping.items()}
    return Migration(first.from_version, second.to_version, mapping)


# --------------------------------------------------------------------------- history


@dataclass
class LabelHistory:
    """Every version of a campaign's label set and the migration into each one."""

    schemas: dict[int, LabelSchema]
    migrations: dict[int, Migration]  # keyed by to_version

    @property
    def current(self) -> LabelSchema:
        return self.schemas[max(self.schemas)]

    def __post_init__(self) -> None:
        versions = sorted(self.schemas)
        if not versions:
            raise LabelSchemaError("a label history needs at least one version")
        for older, newer in zip(versions, versions[1:]):
            m = self.migrations.get(newer)
            if m is None or m.from_version != older:
                raise LabelSchemaError(f"label set version {newer} has no migration from version {older}")

    def migration(self, from_version: int, to_version: int | None = None) -> Migration:
        to_version = self.current.version if to_version is None else to_version
        if from_version not in self.schemas:
            raise LabelSchemaError(f"unknown label set version {from_version}; known: {sorted(self.schemas)}")
        if to_version not in self.schemas:
            raise LabelSchemaError(f"unknown label set version {to_version}; known: {sorted(self.schemas)}")
        if to_version < from_version:
            raise LabelSchemaError("labels can only be migrated forward")
        names = self.schemas[from_version].names
        result = Migration(from_version, from_version, {n: n for n in names})
        for v in sorted(x for x in self.schemas if from_version < x <= to_version):
            result = compose(result, self.migrations[v])
        return result


def history_from_config(names: Sequence[str], version: int, previous: Sequence[Mapping] = ()) -> LabelHistory:
    """Build the history from ``[labels]`` config: current ``names``/``version`` and a list
    of earlier versions, each ``{version, names, mapping}`` where ``mapping`` maps its labels to
    the *next* version's labels ("" = re-label; a label kept by name maps to itself)."""
    current = LabelSchema(int(version), tuple(names))
    olds = sorted(((LabelSchema(int(p["version"]), tuple(p["names"])), dict(p.get("mapping") or {})) for p in previous),
                  key=lambda pair: pair[0].version)
    seen = [s.version for s, _ in olds]
    if len(set(seen)) != len(seen):
        raise LabelSchemaError(f"label set versions listed twice: {sorted(seen)}")
    if olds and olds[-1][0].version >= current.version:
        raise LabelSchemaError(f"earlier label set versions {seen} must all be below the current version {current.version}")
    schemas = {s.version: s for s, _ in olds}
    schemas[current.version] = current
    chain = [s for s, _ in olds] + [current]
    migrations: dict[int, Migration] = {}
    for (old, mapping), new in zip(olds, chain[1:]):
        migrations[new.version] = make_migration(old, new, mapping)
    return LabelHistory(schemas, migrations)


def migrate_labels(frame: pd.DataFrame, history: LabelHistory, *, version_col: str = "label_version",
                   label_col: str = "label", to_version: int | None = None) -> pd.DataFrame:
    """Map every row's label to ``to_version`` (default: current).

    Returns a copy with ``original_label``, ``original_version`` and
    ``needs_relabel`` (True where the label cannot be mapped: split/removed;
    ``label`` is then None). Rows without a version are taken as the target
    version. Raises :class:`LabelSchemaError` for an unknown version or a label
    that is not in the version it claims: labels of different sets are never
    silently mixed.
    """
    to_version = history.current.version if to_version is None else to_version
    out = frame.copy()
    versions = out[version_col] if version_col in out.columns else pd.Series(to_version, index=out.index)
    versions = versions.fillna(to_version).astype(int)
    out["original_label"] = out[label_col]
    out["original_version"] = versions
    out["needs_relabel"] = False
    unknown = sorted(set(versions) - set(history.schemas))
    if unknown:
        raise LabelSchemaError(f"annotations carry unknown label set version(s) {unknown}; known: {sorted(history.schemas)}")
    new_labels = out[label_col].astype(object).copy()
    for v in sorted(set(versions)):
        rows = versions == v
        valid = set(history.schemas[v].names)
        present = out.loc[rows, label_col]
        bad = sorted({str(x) for x in present.dropna() if x not in valid})
        if bad:
            raise LabelSchemaError(f"labels {bad} are not in label set version {v} {list(history.schemas[v].names)}")
        if v == to_version:
            continue
        m = history.migration(v, to_version).mapping
        mapped = present.map(lambda x: None if pd.isna(x) else m.get(x))
        new_labels.loc[rows] = mapped
        out.loc[rows & present.notna() & mapped.isna(), "needs_relabel"] = True
    out[label_col] = new_labels
    return out
