"""One error root (issue 15): every error labelloop raises on purpose is a LabelloopError, and the CLI
turns each into one line and its exit code without knowing the classes by name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from labelloop.flows.cli import EXIT_BAD_INPUT, EXIT_INTERNAL, known_error, main
from labelloop.tasks.errors import LabelloopError

ROOT = Path(__file__).resolve().parents[2]


def _error_classes() -> list[tuple[str, str]]:
    """(module, class) of every class named *Error / *Unavailable defined in the project's packages."""
    found = []
    for pkg in ("flows", "tasks", "integrations"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:  # module level only (a logging.Filter nested in a function is not one)
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Unavailable")):
                    found.append(("labelloop." + ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"),
                                  node.name))
    return found


def test_every_error_class_has_the_one_root():
    classes = _error_classes()
    assert len(classes) >= 12, classes  # the ten of issue 15, LedgerError's subclass RoundBusyError, the schema's
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        if name == "SchemaError":  # internal to the ledger package: always re-raised as LedgerError
            continue
        assert issubclass(cls, LabelloopError), f"{module}.{name} does not derive from LabelloopError"


@pytest.mark.parametrize("module,name,base", [
    ("labelloop.flows.config", "ConfigError", ValueError), ("labelloop.integrations.backend", "BackendError", RuntimeError),
    ("labelloop.integrations.ledger", "LedgerError", RuntimeError), ("labelloop.tasks.train", "TrainingError", ValueError),
])
def test_old_bases_are_kept(module, name, base):
    assert issubclass(getattr(importlib.import_module(module), name), base), "callers catching the old base still do"


def test_exit_codes():
    from labelloop.flows.locking import RoundBusyError
    from labelloop.integrations.ledger import LedgerError

    assert known_error(RoundBusyError("busy")) == EXIT_BAD_INPUT
    assert known_error(LedgerError("x")) == EXIT_BAD_INPUT
    assert known_error(FileNotFoundError(2, "No such file", "x.csv")) == EXIT_BAD_INPUT
    assert known_error(KeyError("bug")) is None

    class Waiting(LabelloopError):
        exit_code = 3

    assert known_error(Waiting("w")) == 3


def test_a_ledger_error_is_one_line_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "c"\n[data]\npath = "pool.csv"\n[labels]\nnames = ["a", "b"]\n'
                   '[ledger]\nurl = "postgresql+psycopg://u:s3cret@127.0.0.1:1/x"\n', encoding="utf-8")
    (tmp_path / "pool.csv").write_text("id,text,label\n1,hello,a\n", encoding="utf-8")
    code = main(["status", str(cfg)])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT != EXIT_INTERNAL, err
    assert err.startswith("error: ") and "internal error" not in err and "Traceback" not in err
    assert "s3cret" not in err and "cannot open the ledger at postgresql+psycopg://u:***@" in err
