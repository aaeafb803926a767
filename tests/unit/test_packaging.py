"""The distribution installs one top-level name, ``labelloop`` (issue 15), and old pickles still load.

Why: until 0.1 the folders installed as the top-level packages ``flows``, ``tasks`` and
``integrations``, which collide with any other project's ``tasks``. The folders stay where they
are in the repository; setuptools' ``package-dir`` maps them under ``labelloop``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_adds_only_labelloop_and_its_dist_info(tmp_path: Path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (wheel,) = tmp_path.glob("labelloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"labelloop", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    for must in ("labelloop/flows/cli.py", "labelloop/tasks/policy.py", "labelloop/integrations/ledger/core.py",
                 "labelloop/flows/templates/campaign.toml",
                 "labelloop/integrations/ledger/migrations/script.py.mako"):
        assert must in names, must
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "labelloop = labelloop.flows.cli:main" in entry


_OLD_PICKLE = """
import pickle, sys
import labelloop.tasks.calibrate as cal
from labelloop.integrations.artifacts import load_pickled

obj = cal.TemperatureCalibrator.__new__(cal.TemperatureCalibrator)
obj.__dict__["t"] = 2.0
old = pickle.dumps(obj, protocol=0).replace(b"labelloop.tasks.calibrate", b"tasks.calibrate")
try:
    pickle.loads(old)
    raise SystemExit("a pre-0.2 name imported on its own")
except ModuleNotFoundError as err:
    assert err.name == "tasks", err.name
got = load_pickled(lambda: pickle.loads(old))
assert isinstance(got, cal.TemperatureCalibrator) and got.__dict__["t"] == 2.0
assert "tasks" not in sys.modules and "tasks.calibrate" not in sys.modules, "the old names are gone again"
assert cal.__spec__.name == "labelloop.tasks.calibrate", cal.__spec__
print("loaded")
"""


def test_a_pickle_that_names_the_old_top_level_packages_still_loads(tmp_path: Path):
    """A featuriser or model pickled by 0.1 names ``tasks.calibrate.X``: it loads, as the same class.

    In a fresh interpreter outside the repository, as installed: here the repository root is on
    ``sys.path``, where ``tasks`` still imports (as a second copy) and would hide the problem.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", _OLD_PICKLE], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "loaded", res.stdout + res.stderr[-3000:]


def test_an_unrelated_missing_module_is_not_hidden():
    from labelloop.integrations.artifacts import load_pickled

    def load():
        raise ModuleNotFoundError("No module named 'somewhere_else'", name="somewhere_else")

    try:
        load_pickled(load)
        raise AssertionError("expected ModuleNotFoundError")
    except ModuleNotFoundError as err:
        assert err.name == "somewhere_else"
