"""The small demo, run once per test session and shared by the demo and the report tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from audit.demo import DemoConfig, run_demo
from audit.training import TrainConfig

SMALL = DemoConfig(n_cases=500, size=64, train=TrainConfig(epochs=15, lr=3e-3), audit_cases=12)


@dataclass
class SmallDemo:
    """What the small demo wrote: its folder, its files by name, its log and its cache."""

    out: Path
    files: dict[str, Path]
    log: Path
    cache: Path


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> SmallDemo:
    root = tmp_path_factory.mktemp("small_demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDAUDIT_CACHE", str(root / "cache"))
        log = root / "log.txt"
        with open(log, "w") as fh:
            files = run_demo(root / "out", SMALL, console=Console(file=fh, width=120))
    return SmallDemo(root / "out", files, log, root / "cache")
