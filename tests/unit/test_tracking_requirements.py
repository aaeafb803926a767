"""The logged model's requirements, and the cost MLflow's requirement check used to add to a fresh round."""

from __future__ import annotations

import pytest

mlflow = pytest.importorskip("mlflow")


def _tiny_model():
    from labelloop.tasks.train import fit_featurizer, train_model

    texts = ["refund please", "card declined", "pin locked", "change my pin", "refund my order", "declined again"]
    return train_model(fit_featurizer(texts), texts, ["money", "card", "pin", "pin", "money", "card"])


@pytest.mark.parametrize("skip", [True, False])
def test_logging_a_model_does_not_list_every_installed_distribution(tmp_path, monkeypatch, skip):
    """MLflow lists every installed distribution (~1 s) before the first model a process logs, only to
    warn about requirements missing from this environment; labelloop's are this environment's packages.
    ``skip=False`` is the control: MLflow's own check, restored, does the scan (so the test can fail)."""
    from mlflow.utils import environment, requirements_utils

    from labelloop.integrations import tracking

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)  # a fresh process's caches
    monkeypatch.setattr(requirements_utils, "_PACKAGES_TO_MODULES", None)
    monkeypatch.setattr(environment, "warn_dependency_requirement_mismatches",
                        requirements_utils.warn_dependency_requirement_mismatches)  # MLflow's own, restored after
    if not skip:
        monkeypatch.setattr(tracking, "skip_requirement_scan", lambda: None)
    scans = []
    real_scan = requirements_utils.importlib_metadata.packages_distributions
    monkeypatch.setattr(requirements_utils.importlib_metadata, "packages_distributions",
                        lambda: scans.append(1) or real_scan())

    tracker = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "requirements", "requirements")
    run = tracker.client.create_run(tracker.experiment_id)
    tracker.log_model(run.info.run_id, _tiny_model(), register=False)

    assert (len(scans) == 0) is skip, f"packages_distributions called {len(scans)} time(s)"
    logged = mlflow.search_logged_models(experiment_ids=[tracker.experiment_id], output_format="list")
    assert len(logged) == 1
    reqs = mlflow.pyfunc.get_model_dependencies(logged[0].model_uri)  # the requirements.txt written with it
    names = {line.split("==")[0].strip() for line in open(reqs).read().splitlines() if line.strip()}
    assert {"scikit-learn", "numpy", "scipy", "mlflow"} <= names
