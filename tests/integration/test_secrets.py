"""Secrets stay secret: a whole campaign run with known, really-used secrets, then a search for them in
everything the run left behind.

Secrets used: the ledger's PostgreSQL password (the URL comes from the variable named by
`[ledger] url_env`), the MLflow tracking server's basic-auth password (MLFLOW_TRACKING_PASSWORD; the
server is `infra/mlflow_server.sh` with its store in the same PostgreSQL), and with the Label Studio backend the Label Studio API token (from
`LABEL_STUDIO_API_KEY`). Places searched: the CLI's
stdout/stderr (including a failing round's exception text), every flow run's parameters and log lines
in the Prefect API, every MLflow param/tag/metric name, registered-model tag/description and artifact,
and every file under the campaign folder (byte search, so SQLite/Parquet/joblib files count too).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_small_campaign
from tests.integration.postgres_cluster import postgres_fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

postgres = postgres_fixture()

URL_ENV = "LABELLOOP_SECRET_TEST_LEDGER_URL"
MLFLOW_PASSWORD = "mlflow-basic-auth-" + "5ecret-7f3a9c"  # sent by MLflow's client as basic auth


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`infra/mlflow_server.sh` as a process, its runs and registry in the PostgreSQL cluster (database
    `mlflow`, as in infra/compose.yaml), artifacts served by the server. Yields the tracking URI."""
    from sqlalchemy import create_engine, text

    from tests.conftest import free_port

    eng = create_engine(postgres.url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = 'mlflow'")).scalar():
            conn.execute(text("CREATE DATABASE mlflow"))
    eng.dispose()
    data = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "LABELLOOP_MLFLOW_DATA": str(data), "LABELLOOP_MLFLOW_PORT": str(port),
           "LABELLOOP_MLFLOW_BACKEND": postgres.url.rsplit("/", 1)[0] + "/mlflow", "LABELLOOP_MLFLOW_TIMEOUT": "180"}
    script = Path(__file__).resolve().parents[2] / "infra" / "mlflow_server.sh"
    res = subprocess.run([str(script), "start"], env=env, capture_output=True, text=True, timeout=240)
    try:
        assert res.returncode == 0, f"infra/mlflow_server.sh start failed:\n{res.stderr[-3000:]}"
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(script), "stop"], env=env, capture_output=True, timeout=120)


def _forms(secret: str) -> list[bytes]:
    """The secret as bytes in the encodings a leak would plausibly take."""
    raw = secret.encode()
    return [raw, urllib.parse.quote(secret, safe="").encode(), base64.b64encode(raw), secret.encode("utf-16-le")]


def _leaks_in_text(text: str, secrets: list[str]) -> bool:
    return any(form.decode("latin-1") in text for s in secrets for form in _forms(s))


def _files_with(root: Path, secrets: list[str]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            if any(form in data for s in secrets for form in _forms(s)):
                hits.append(str(p.relative_to(root)))
    return hits


def _prefect_post(api: str, path: str, body: dict) -> list:
    req = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _prefect_dump(api: str) -> str:
    """Every flow run (with its parameters) and every log line the Prefect API holds, as one text."""
    out = []
    for path in ("/flow_runs/filter", "/logs/filter", "/task_runs/filter"):
        offset = 0
        while True:
            page = _prefect_post(api, path, {"limit": 200, "offset": offset})
            out.extend(json.dumps(x) for x in page)
            if len(page) < 200:
                break
            offset += 200
    return "\n".join(out)


def _mlflow_findings(tracking_uri: str, secrets: list[str], dst: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found: list[str] = []
    n_runs = 0
    for exp in client.search_experiments():
        if _leaks_in_text(json.dumps({"name": exp.name, "tags": exp.tags, "loc": exp.artifact_location}), secrets):
            found.append(f"experiment {exp.name}")
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            n_runs += 1
            blob = json.dumps({"params": run.data.params, "tags": run.data.tags,
                               "metrics": sorted(run.data.metrics), "name": run.info.run_name})
            if _leaks_in_text(blob, secrets):
                found.append(f"run {run.info.run_name}: params/tags")
            local = Path(client.download_artifacts(run.info.run_id, "", str(dst / run.info.run_id)))
            found.extend(f"run {run.info.run_name}: artifact {f}" for f in _files_with(local, secrets))
    for rm in client.search_registered_models():
        blob = json.dumps({"tags": rm.tags, "description": rm.description})
        for mv in client.search_model_versions(f"name = '{rm.name}'"):
            blob += json.dumps({"tags": mv.tags, "description": mv.description, "source": mv.source})
        if _leaks_in_text(blob, secrets):
            found.append(f"registered model {rm.name}")
    assert n_runs >= 3, f"expected the campaign's runs in MLflow, found {n_runs}"
    return found


def _check_everywhere(cfg: Path, outputs: list[subprocess.CompletedProcess], secrets: list[str],
                      prefect_api: str, tmp_path: Path) -> None:
    for res in outputs:
        assert not _leaks_in_text(res.stdout + res.stderr, secrets), f"secret in the output of {res.args[3:]}"
    assert not _leaks_in_text(_prefect_dump(prefect_api), secrets), "secret in a Prefect flow run or log line"
    from labelloop.flows.config import load_config

    tracking_uri = load_config(cfg).tracking_uri
    assert _mlflow_findings(tracking_uri, secrets, tmp_path / "artifacts") == []
    assert _files_with(cfg.parent, secrets) == [], "secret in a file under the campaign folder"


def _failing_round(cfg: Path, env: dict) -> subprocess.CompletedProcess:
    """A round that dies on an unexpected error (a corrupt featuriser): the traceback must not carry secrets."""
    feat = cfg.parent / "models" / "featurizer.joblib"
    good = feat.read_bytes()
    feat.write_bytes(b"not a joblib file")
    try:
        res = run_cli("round", str(cfg), env=env)
    finally:
        feat.write_bytes(good)
    assert res.returncode != 0
    assert "Traceback" in res.stderr or "error" in res.stderr.lower(), res.stderr[-2000:]
    return res


def test_simulated_campaign_leaks_no_secret(postgres, mlflow_server, prefect_api, tmp_path: Path):
    """The team set-up without Docker: ledger in PostgreSQL, MLflow and Prefect servers as processes."""
    cfg = write_small_campaign(tmp_path / "campaign", name="secret-sim", n=600, budget=75,
                               extra=f'[ledger]\nurl_env = "{URL_ENV}"\n[mlflow]\ntracking_uri = "{mlflow_server}"\n')
    env = {"PREFECT_API_URL": prefect_api, URL_ENV: postgres.url,
           "MLFLOW_TRACKING_USERNAME": "labelloop", "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD}
    outputs = [run_cli("run", str(cfg), "--rounds", "2", env=env)]
    assert outputs[0].returncode == 0, outputs[0].stderr[-3000:]
    outputs += [run_cli("status", str(cfg), env=env), run_cli("doctor", str(cfg), env=env),
                _failing_round(cfg, env)]
    _check_everywhere(cfg, outputs, [postgres.password, MLFLOW_PASSWORD], prefect_api, tmp_path)
    from mlflow.tracking import MlflowClient

    versions = MlflowClient(tracking_uri=mlflow_server).search_model_versions("name = 'labelloop-secret-sim'")
    assert versions, "the active arm's models were registered in the MLflow server's registry"


@pytest.mark.label_studio
def test_label_studio_campaign_leaks_no_token(postgres, prefect_api, label_studio, tmp_path: Path):
    url, token = label_studio
    extra = f'''
[ledger]
url_env = "{URL_ENV}"
[annotation.label_studio]
url = "{url}"
project_title = "labelloop secrets test"
simulate_annotators = true
'''
    cfg = write_small_campaign(tmp_path / "campaign", name="secret-ls", n=400, budget=20, batch=10, seed_size=10,
                               backend="label_studio", extra=extra)
    env = {"PREFECT_API_URL": prefect_api, URL_ENV: postgres.url, "LABEL_STUDIO_API_KEY": token}
    # one round is enough here (Label Studio rounds are slow); the simulated test runs two
    outputs = [run_cli("run", str(cfg), "--rounds", "1", env=env)]
    assert outputs[0].returncode == 0, outputs[0].stderr[-3000:]
    outputs += [run_cli("status", str(cfg), env=env), run_cli("doctor", str(cfg), env=env),
                _failing_round(cfg, env)]

    secrets = [token, postgres.password]
    _check_everywhere(cfg, outputs, secrets, prefect_api, tmp_path)
