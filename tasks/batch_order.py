"""The order in which people see a batch (pure).

Why: an active-learning batch is, by construction, the items the model finds hardest. Shown
in the order the strategy ranked them, an annotator meets a wall of ambiguous texts first,
slows down, and starts guessing; easier items in between keep the pace and the attention up
(and give each annotator some answers they can be sure of). So a batch is pushed in a mixed
order: it starts with an easier item, and after every ``easy_per_hard`` easier items comes one
of the hard ones, hardest first, until one kind runs out. Which items are in the batch does
not change, only their order; Label Studio's default sequential labelling stream shows tasks
in the order they were imported.

Difficulty is what the model says: ``1 - confidence`` of its guess (the pre-annotation score).
Items without a guess (cold start, no model yet) count as of median difficulty; ties go by
item id, so the order is the same on every run.
"""

from __future__ import annotations

from statistics import median
from typing import Mapping, Sequence

__all__ = ["order_for_people"]


def order_for_people(item_ids: Sequence[str], confidence: Mapping[str, float | None],
                     *, easy_per_hard: int = 2) -> list[str]:
    """``item_ids`` reordered for the people who label them (see the module docstring).

    Args:
        item_ids: the batch (duplicates are dropped, first occurrence kept).
        confidence: item -> the model's confidence in its guess (max class probability); missing
            or None for items without a guess.
        easy_per_hard: easier items between two hard ones (>= 1).

    The hardest ``n // (easy_per_hard + 1)`` items are the "hard" ones, so each has its easier
    items before it and no two hard items are ever adjacent.
    """
    if easy_per_hard < 1:
        raise ValueError("easy_per_hard must be >= 1")
    ids = list(dict.fromkeys(str(i) for i in item_ids))
    if len(ids) <= 2:
        return ids
    known = [float(c) for i in ids if (c := confidence.get(i)) is not None and c == c]
    fill = 1.0 - median(known) if known else 0.5
    difficulty = {i: (1.0 - float(c)) if (c := confidence.get(i)) is not None and c == c else fill for i in ids}
    by_difficulty = sorted(ids, key=lambda i: (-difficulty[i], i))
    n_hard = len(ids) // (easy_per_hard + 1)
    hard, easy = by_difficulty[:n_hard], sorted(by_difficulty[n_hard:], key=lambda i: (difficulty[i], i))
    out: list[str] = []
    while hard or easy:
        for _ in range(easy_per_hard):
            if easy:
                out.append(easy.pop(0))
        if hard:
            out.append(hard.pop(0))
    return out
