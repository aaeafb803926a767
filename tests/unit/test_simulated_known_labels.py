"""The simulated annotators know items added after their backend was built (stream mode's first run
sets the campaign up, then ingests arrivals and routes them to people, in one process)."""

from __future__ import annotations

import pandas as pd
import pytest

from labelloop.flows.runtime import LedgerKnownLabels
from labelloop.integrations.backend import BackendError, TaskRequest
from labelloop.integrations.ledger import Ledger
from labelloop.integrations.simulated import SimulatedBackend


def _items(ids, labels, split="pool"):
    return pd.DataFrame({"id": ids, "text": [f"text {i}" for i in ids], "label": labels, "split": split})


def test_items_added_after_the_backend_was_built_can_be_pushed_and_answered(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", "c1")
    ledger.add_items(_items(["a", "b", "u"], ["x", "y", None]))
    known = LedgerKnownLabels(ledger)
    backend = SimulatedBackend(tmp_path / "sim.json", true_labels=known, annotators=[("ann-1", 1.0)],
                               labels=["x", "y"], overlap=1)
    assert "a" in known and "u" not in known and len(known) == 2
    ledger.add_items(_items(["s1", "s2"], ["y", "x"], split="stream"))  # arrivals, after the backend exists
    backend.push([TaskRequest(item_id="s1", text="text s1"), TaskRequest(item_id="s2", text="text s2")])
    assert backend.answers("s1") == [("ann-1", "y")] and known["s2"] == "x" and len(known) == 4
    with pytest.raises(BackendError, match="cannot answer 1 item"):  # still no label: still refused
        backend.push([TaskRequest(item_id="u", text="text u")])
    with pytest.raises(KeyError):
        known["nowhere"]
    ledger.dispose()


def test_a_snapshot_would_have_refused_them(tmp_path):
    """The control: the plain dict the backend used to get fails exactly where the ledger view does not."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", "c1")
    ledger.add_items(_items(["a"], ["x"]))
    snapshot = dict(LedgerKnownLabels(ledger))
    backend = SimulatedBackend(tmp_path / "sim.json", true_labels=snapshot, annotators=[("ann-1", 1.0)],
                               labels=["x", "y"], overlap=1)
    ledger.add_items(_items(["s1"], ["y"], split="stream"))
    with pytest.raises(BackendError, match="cannot answer 1 item"):
        backend.push([TaskRequest(item_id="s1", text="text s1")])
    ledger.dispose()
