"""Start the local Label Studio for the demo (installing it on first use).

Why through infra/label_studio.sh: the server lives in its own virtual
environment (it pins its own Django) and the script is the one documented
way to install, start, stop and get the token; the demo must not grow a
second way.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from labelloop.integrations.backend import BackendError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "infra" / "label_studio.sh"


def _run(*args: str) -> str:
    res = subprocess.run([str(SCRIPT), *args], cwd=ROOT, text=True, capture_output=True)
    if res.returncode != 0:
        raise BackendError(f"infra/label_studio.sh {' '.join(args)} failed (exit {res.returncode}): "
                           f"{(res.stderr or res.stdout).strip()[-800:]}")
    return res.stdout.strip()


def ensure_running() -> str:
    """Install (first time), start (if not running), export the token to this process; return the URL."""
    print("Label Studio: installing into .venv-labelstudio on first use (~2 min), then starting ...", flush=True)
    subprocess.run([str(SCRIPT), "install"], cwd=ROOT, check=False)
    res = subprocess.run([str(SCRIPT), "start"], cwd=ROOT, text=True)
    if res.returncode not in (0,):
        raise BackendError(f"could not start the local Label Studio (infra/label_studio.sh start exit "
                           f"{res.returncode}); see the messages above")
    url = _run("url")
    os.environ["LABEL_STUDIO_API_KEY"] = _run("token")  # this process only; never printed
    return url


def describe() -> str:
    creds = ROOT / ".labelloop" / "label-studio" / "credentials.env"
    email = "admin@labelloop.local"
    return (f"\nLabel Studio: {_run('url')}  (login {email}; password in {creds})\n"
            "Open the project 'labelloop demo' to see the tasks, the model's pre-annotations and who labelled what.\n"
            "Stop it with: infra/label_studio.sh stop")
