"""Which public functions the fuzz matrix must cover, and the rows that cover them.

Required: every function in the ``__all__`` of a ``probes`` subpackage, every public method of
``probes.hooks.HookRegistry``, and the loaders and reader-study entry points of ``audit``
(``audit.models``, ``audit.data``, ``audit.data.atlas``, ``audit.readers``). Each needs a row
in one of the ``tests/fuzz/test_*.py`` modules (their ``ROWS``) or an entry in their
``EXEMPT`` (``{name: why it takes no user data to fuzz}``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from tests.fuzz.harness import Row

PACKAGES = ["probes.core", "probes.hooks", "probes.attribution", "probes.metrics", "probes.internals",
            "probes.interventions", "audit.models", "audit.data", "audit.data.atlas", "audit.readers"]
CLASSES = {"probes.hooks": ["HookRegistry"]}


def required() -> set[str]:
    """Qualified names of every public function the matrix must cover."""
    out: set[str] = set()
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                out.add(f"{pkg}.{name}")
        for cls in CLASSES.get(pkg, []):
            for meth, obj in vars(getattr(mod, cls)).items():
                if not meth.startswith("_") and (inspect.isfunction(obj) or isinstance(obj, property)):
                    out.add(f"{pkg}.{cls}.{meth}")
    return out


def collect() -> tuple[list[Row], dict[str, str]]:
    """``ROWS`` and ``EXEMPT`` of every fuzz module."""
    rows: list[Row] = []
    exempt: dict[str, str] = {}
    here = Path(__file__).resolve().parent
    for info in pkgutil.iter_modules([str(here)]):
        if info.name.startswith("test_"):
            mod = importlib.import_module(f"tests.fuzz.{info.name}")
            rows += list(getattr(mod, "ROWS", []))
            exempt.update(getattr(mod, "EXEMPT", {}))
    return rows, exempt
