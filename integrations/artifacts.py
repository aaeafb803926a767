"""Load pickled artifacts written before the packages moved under ``labelloop`` (issue 15).

Why: until 0.1 the code installed as the top-level packages ``flows``, ``tasks`` and
``integrations``. A campaign's featuriser (``joblib``) and the models in its MLflow registry
were pickled then, so they name classes such as ``tasks.calibrate.TemperatureCalibrator``.
Those names no longer import. Rather than leave an existing campaign unable to continue (or
its drift check unable to load the champion), such a load runs with the old names resolving to
the very same ``labelloop.`` modules (not copies: ``isinstance`` keeps working), for the
duration of the load only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

#: the pre-0.2 top-level package names; each now lives at ``labelloop.<name>``
LEGACY_PACKAGES = ("flows", "tasks", "integrations")


class _LegacyNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import tasks.x`` gives the module ``labelloop.tasks.x`` itself."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self._specs: dict[str, Any] = {}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] not in LEGACY_PACKAGES:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        module = importlib.import_module("labelloop." + spec.name)
        self._specs[spec.name] = module.__spec__  # the import system overwrites it; exec_module restores it
        return module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = self._specs.pop(module.__spec__.name)


@contextmanager
def legacy_module_names() -> Iterator[None]:
    """Old top-level module names resolve to the ``labelloop.`` modules inside the block."""
    before = set(sys.modules)
    finder = _LegacyNames()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if name.split(".")[0] in LEGACY_PACKAGES:
                del sys.modules[name]


def load_pickled(load: Callable[[], T]) -> T:
    """``load()``; if it fails on a pre-0.2 module name, once more with those names resolving."""
    try:
        return load()
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in LEGACY_PACKAGES:
            raise
    with legacy_module_names():
        return load()
