"""Simulated annotators: deterministic, noisy answers from known labels.

Why hash-based randomness instead of a shared RNG: an annotator's answer to an
item must be the same however often a round is re-run, in whatever order
items are pulled, and whichever backend (in-memory or a real Label Studio)
carries it. A stable hash of (seed, item, annotator) gives exactly that.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import pandas as pd


def stable_uniform(*keys: object) -> float:
    """A number in [0, 1) fixed by ``keys``."""
    h = hashlib.blake2b("\x1f".join(map(str, keys)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def assign_annotators(item_id: str, annotators: Sequence[str], overlap: int, seed: int = 0) -> list[str]:
    """The ``overlap`` distinct annotators who label this item (a stable, spread-out choice)."""
    k = min(overlap, len(annotators))
    ranked = sorted(annotators, key=lambda a: stable_uniform(seed, "assign", item_id, a))
    return ranked[:k]


def simulated_answer(
    item_id: str,
    annotator: str,
    accuracy: float,
    true_label: str,
    labels: Sequence[str],
    seed: int = 0,
) -> str:
    """The true label with probability ``accuracy``, else a uniformly chosen wrong label."""
    if stable_uniform(seed, "correct", item_id, annotator) < accuracy:
        return true_label
    wrong = [lbl for lbl in labels if lbl != true_label]
    if not wrong:
        return true_label
    return wrong[int(stable_uniform(seed, "which", item_id, annotator) * len(wrong))]


_FIRST_NAMES = ("Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
                "Kemi", "Luca", "Maya", "Nils", "Olga", "Priya", "Quentin", "Rosa", "Sami", "Tariq")
_LAST_NAMES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Novak", "Haddad", "Silva", "Kowalski", "Nakamura",
               "Brennan", "Achebe", "Rossi", "Fischer", "Dubois", "Ivanova", "Mehta", "Costa", "Jensen", "Yilmaz",
               "Walsh")


def person_name(annotator: str) -> tuple[str, str]:
    """A readable (first, last) name for a simulated annotator.

    Why: Label Studio shows a user's initials on every task; simulated users named
    ``ann-1``, ``ann-2``... all showed "AN", so nobody could tell who labelled what. The name is
    fixed by the annotator's name (``...1`` -> the first pair, and so on; other names by a hash),
    so the same simulated user keeps its name, and ten users get ten different initials.
    """
    base = annotator.split("@")[0]
    digits = re.search(r"(\d{1,6})$", base)
    if digits and int(digits.group(1)) > 0:
        i = int(digits.group(1)) - 1
    else:
        i = int(stable_uniform("name", base) * len(_FIRST_NAMES) * len(_LAST_NAMES))
    n = len(_FIRST_NAMES)
    first, last = _FIRST_NAMES[i % n], _LAST_NAMES[(i % n + i // n) % len(_LAST_NAMES)]
    return first, last


def simulated_lead_time(item_id: str, annotator: str, seed: int = 0) -> float:
    """Seconds a simulated annotator spends on an item: 2 to 20 s, fixed by (seed, item, annotator),
    so the annotators' side (seconds per label, cost in hours) has numbers to show in demos and tests."""
    return round(2.0 + 18.0 * stable_uniform(seed, "lead", item_id, annotator), 2)


def screen_annotations(frame: "pd.DataFrame", *, known_items: set[str], labels: Sequence[str]) -> tuple["pd.DataFrame", list[str]]:
    """Split pulled annotations into usable rows and a list of problems.

    Why screen instead of failing the pull: one bad annotation (a task for an
    item the ledger never pushed, a label outside the label set) must not stop
    every good annotation from being stored. The bad ones are reported by id
    and left out; they are never used as labels.
    """
    import pandas as pd

    if frame.empty:
        return frame, []
    problems: list[str] = []
    unknown = ~frame["item_id"].isin(known_items)
    if unknown.any():
        ids = frame.loc[unknown, "backend_annotation_id"].astype(str).tolist()
        problems.append(f"{int(unknown.sum())} annotation(s) for items labelloop never pushed (annotation ids {ids[:10]})")
    submitted = frame["status"] == "submitted"
    bad_label = submitted & ~frame["label"].isin(list(labels))
    if bad_label.any():
        sample = frame.loc[bad_label, ["backend_annotation_id", "label"]].astype(str).values.tolist()[:10]
        problems.append(f"{int(bad_label.sum())} annotation(s) with a label outside the label set: {sample}")
    odd_status = ~frame["status"].isin(["submitted", "skipped"])
    if odd_status.any():
        ids = frame.loc[odd_status, "backend_annotation_id"].astype(str).tolist()
        problems.append(f"{int(odd_status.sum())} annotation(s) with status other than submitted/skipped: {ids[:10]}")
    keep = ~(unknown | bad_label | odd_status)
    return pd.DataFrame(frame[keep]), problems
