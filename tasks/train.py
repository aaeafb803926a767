"""Featuriser and model: TF-IDF + logistic regression, a scikit-learn Pipeline.

Why the vectoriser is fitted once on the unlabelled texts and then frozen:
with a handful of labels, a vocabulary learnt from the labelled texts alone
misses most of the pool's words, so uncertainty on unseen words is
meaningless. Fitting TF-IDF on the pool (never on the test or calibration
texts) is the standard transductive set-up in active learning, and freezing
it keeps every round's model comparable and the features reusable for
diversity and drift. The result is still a plain estimator with
``fit`` / ``predict_proba`` that MLflow can log and serve.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from labelloop.tasks.errors import LabelloopError
from labelloop.tasks.features import (FEATURIZER_SETTINGS, FEATURIZERS, resolve_featurizer,  # noqa: F401 - re-exported
                                      uses_minilm)


class TrainingError(LabelloopError, ValueError):
    """The model cannot be trained on the labels at hand."""


def fit_featurizer(texts: Sequence[str], *, max_features: int = 50_000, ngram_max: int = 2) -> TfidfVectorizer:
    """TF-IDF over word n-grams; sublinear tf dampens long repetitive texts."""
    vec = TfidfVectorizer(
        lowercase=True,
        ngram_range=(1, ngram_max),
        max_features=max_features,
        sublinear_tf=True,
        min_df=1,
        dtype=np.float32,
    )
    return vec.fit(list(texts))


def make_featurizer(kind: str, texts: Sequence[str], *, max_features: int = 50_000, ngram_max: int = 2,
                    reporter: Any = None) -> Any:
    """The campaign's frozen featuriser, fitted on the pool texts.

    ``tfidf``: :func:`fit_featurizer`. ``minilm``: frozen all-MiniLM-L6-v2 sentence
    embeddings (:class:`tasks.embeddings.MiniLMFeaturizer`, the optional ``embeddings``
    extra); the texts are embedded once here, so the first round finds them in the
    cache (by text hash). ``tfidf+minilm``: both side by side (a scikit-learn
    ``FeatureUnion``, sparse rows): word n-grams catch the topical keywords TF-IDF is
    strong on, the embedding the paraphrases it misses. Each half is L2-normalised on
    its own and the halves are weighted equally (one setting for every data set, not
    tuned per benchmark). Raises ``EmbeddingsUnavailable`` with the install command
    when the extra is missing. ``reporter`` (MiniLM only): who hears the model load and the
    embedding progress (:class:`tasks.embeddings.MiniLMFeaturizer`).
    """
    kind, _ = resolve_featurizer(kind)  # "auto" as set-up resolves it; an unknown name raises
    if kind == "tfidf":
        return fit_featurizer(texts, max_features=max_features, ngram_max=ngram_max)
    from labelloop.tasks.embeddings import MiniLMFeaturizer

    minilm = MiniLMFeaturizer(reporter=reporter).fit(texts)
    minilm.transform(list(texts))  # warm the cache
    if kind == "minilm":
        return minilm
    tfidf = fit_featurizer(texts, max_features=max_features, ngram_max=ngram_max)
    # both halves are already fitted: FrozenEstimator keeps FeatureUnion.fit (inside build_model's
    # pipeline, via its own FrozenEstimator) from refitting TF-IDF or re-embedding
    return FeatureUnion([("tfidf", FrozenEstimator(tfidf)), ("minilm", FrozenEstimator(minilm))])


def featurizer_kind(vectorizer: Any) -> str:
    """The concrete featuriser name of a fitted featuriser made by :func:`make_featurizer`.

    Why: a campaign set up with ``auto`` keeps what set-up chose; a refit (drift) must make
    the same kind again even if the MiniLM extra was installed or removed since.
    """
    if isinstance(vectorizer, FeatureUnion):
        return "+".join(name for name, _ in vectorizer.transformer_list)
    if isinstance(vectorizer, TfidfVectorizer):
        return "tfidf"
    if type(vectorizer).__name__ == "MiniLMFeaturizer":  # by name: this module does not import torch's side
        return "minilm"
    raise TypeError(f"not a labelloop featuriser: {type(vectorizer).__name__}")


def build_model(vectorizer: Any, *, C: float = 10.0, random_state: int = 0) -> Pipeline:
    """An unfitted pipeline whose features step is the frozen, pre-fitted vectoriser.

    ``class_weight="balanced"`` because campaigns are judged on macro-F1 and
    pools are usually imbalanced.
    """
    clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=random_state)
    return Pipeline([("features", FrozenEstimator(vectorizer)), ("clf", clf)])


def train_model(
    vectorizer: Any,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    C: float = 10.0,
    random_state: int = 0,
) -> Pipeline:
    """Fit the pipeline on the trusted labels of one arm."""
    if len(texts) != len(labels):
        raise TrainingError(f"{len(texts)} texts but {len(labels)} labels")
    distinct = sorted(set(labels))
    if len(distinct) < 2:
        raise TrainingError(
            f"need labels of at least 2 classes to train, got {len(texts)} labels of {distinct or 'no class'}"
        )
    model = build_model(vectorizer, C=C, random_state=random_state)
    return model.fit(list(texts), list(labels))


def predict_proba_aligned(model: Pipeline, X: Sequence[str] | object, classes: Sequence[str],
                          *, features: bool = False) -> np.ndarray:
    """Class probabilities with one column per campaign label, in the campaign's order.

    A class no trained label belongs to gets probability 0, so downstream
    code (query scores, ECE, per-class recall) always sees the same columns.
    With ``features=True``, ``X`` is already the vectorised matrix.
    """
    clf = model.named_steps["clf"]
    raw = clf.predict_proba(X) if features else model.predict_proba(list(X))  # type: ignore[arg-type]
    out = np.zeros((raw.shape[0], len(classes)), dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(clf.classes_):
        out[:, index[str(c)]] = raw[:, j]
    return out


