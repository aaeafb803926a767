"""The featuriser names, without the code.

Why its own module: the campaign config validates ``[model] featurizer`` and the CLI checks
``simulate --featurizer`` against these names, and neither may import scikit-learn or torch
for that (a config error answers in under a second). The featurisers themselves are built by
:func:`tasks.train.make_featurizer`.
"""

from __future__ import annotations

FEATURIZERS: tuple[str, ...] = ("tfidf", "minilm", "tfidf+minilm")
"""``tfidf`` (default): word 1-2-grams. ``minilm``: frozen all-MiniLM-L6-v2 sentence embeddings.
``tfidf+minilm``: both side by side, each half L2-normalised, equal weights."""


def uses_minilm(kind: str) -> bool:
    """Whether featuriser ``kind`` needs the optional MiniLM extra (torch + the packaged weights)."""
    return kind in ("minilm", "tfidf+minilm")
