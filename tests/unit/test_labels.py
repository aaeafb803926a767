"""Label schema versions (tasks/labels.py): rename, merge, split, history, migration of answers."""

from __future__ import annotations

import pandas as pd
import pytest

from labelloop.tasks.labels import (
    LabelHistory,
    LabelSchema,
    LabelSchemaError,
    add_labels,
    compose,
    history_from_config,
    make_migration,
    merge,
    migrate_labels,
    remove_labels,
    rename,
    split,
)

V1 = LabelSchema(1, ("billing", "shipping", "technical", "account", "feedback"))


def test_rename_maps_one_to_one_and_keeps_order() -> None:
    v2, m = rename(V1, {"technical": "tech"})
    assert v2.version == 2 and v2.names == ("billing", "shipping", "tech", "account", "feedback")
    assert m.mapping["technical"] == "tech" and m.mapping["billing"] == "billing" and m.relabel == []


def test_merge_maps_every_source_to_the_merged_label() -> None:
    v2, m = merge(V1, ["account", "feedback"], "other")
    assert v2.names == ("billing", "shipping", "technical", "other")
    assert m.mapping["account"] == m.mapping["feedback"] == "other"
    v2b, m2 = merge(V1, ["feedback"], "account")  # into an existing label
    assert v2b.names == ("billing", "shipping", "technical", "account") and m2.mapping["feedback"] == "account"


def test_split_flags_the_old_label_for_relabelling() -> None:
    v2, m = split(V1, "account", ["login", "profile"])
    assert v2.names == ("billing", "shipping", "technical", "login", "profile", "feedback")
    assert m.mapping["account"] is None and m.relabel == ["account"]
    with pytest.raises(LabelSchemaError, match="already exist"):
        split(V1, "account", ["billing", "profile"])


def test_add_and_remove() -> None:
    v2, m = add_labels(V1, ["returns"])
    assert v2.names[-1] == "returns" and m.relabel == []
    v3, m3 = remove_labels(v2, ["feedback"])
    assert "feedback" not in v3.names and m3.relabel == ["feedback"]


def test_compose_chains_migrations() -> None:
    v2, m12 = rename(V1, {"technical": "tech"})
    v3, m23 = split(v2, "tech", ["hardware", "software"])
    m13 = compose(m12, m23)
    assert (m13.from_version, m13.to_version) == (1, 3)
    assert m13.mapping["technical"] is None and m13.mapping["billing"] == "billing"
    with pytest.raises(LabelSchemaError):
        compose(m23, m12)


def test_bad_schemas_and_mappings_are_rejected() -> None:
    with pytest.raises(LabelSchemaError, match="duplicate"):
        LabelSchema(1, ("a", "a"))
    with pytest.raises(LabelSchemaError, match="at least 2"):
        LabelSchema(1, ("a",))
    v2 = LabelSchema(2, ("x", "y"))
    with pytest.raises(LabelSchemaError, match="not in that version"):
        make_migration(V1, v2, {"billing": "nope"})
    with pytest.raises(LabelSchemaError, match="not in that version"):
        make_migration(V1, v2, {"nope": "x"})
    with pytest.raises(LabelSchemaError, match="must be above"):
        make_migration(v2, V1)


def test_history_from_config_and_unmapped_labels_need_relabelling() -> None:
    h = history_from_config(["billing", "shipping", "tech", "other"], 3, [
        {"version": 1, "names": list(V1.names), "mapping": {"technical": "tech"}},
        {"version": 2, "names": ["billing", "shipping", "tech", "account", "feedback"],
         "mapping": {"account": "other", "feedback": ""}},
    ])
    assert h.current.version == 3
    m = h.migration(1)
    assert m.mapping == {"billing": "billing", "shipping": "shipping", "technical": "tech",
                         "account": "other", "feedback": None}
    with pytest.raises(LabelSchemaError, match="below the current"):
        history_from_config(["a", "b"], 1, [{"version": 2, "names": ["a", "b"]}])
    with pytest.raises(LabelSchemaError, match="no migration"):
        LabelHistory({1: V1, 2: LabelSchema(2, ("a", "b"))}, {})


def test_migrate_labels_maps_or_flags_and_never_mixes() -> None:
    h = history_from_config(["billing", "shipping", "technical", "login", "profile", "feedback"], 2,
                            [{"version": 1, "names": list(V1.names)}])  # v2 split account -> login/profile
    ann = pd.DataFrame({
        "item_id": ["i1", "i2", "i3", "i4"],
        "label": ["billing", "account", "login", "feedback"],
        "label_version": [1, 1, 2, None],  # None: given under the current version
    })
    out = migrate_labels(ann, h)
    assert out["label"].tolist()[0] == "billing" and pd.isna(out["label"].iloc[1])
    assert out["needs_relabel"].tolist() == [False, True, False, False]
    assert out["original_label"].tolist() == ann["label"].tolist()
    assert out["original_version"].tolist() == [1, 1, 2, 2]

    with pytest.raises(LabelSchemaError, match="not in label set version 2"):
        migrate_labels(pd.DataFrame({"label": ["account"], "label_version": [2]}), h)  # v1 label stamped v2
    with pytest.raises(LabelSchemaError, match="unknown label set version"):
        migrate_labels(pd.DataFrame({"label": ["billing"], "label_version": [7]}), h)
