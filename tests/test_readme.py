"""The README is a tutorial that runs: its code blocks execute as written, in order.

Python blocks run in one namespace (a block may use what an earlier one defined), in a fresh
working folder. Shell blocks run their ``audit ...`` lines with the installed command line;
the two set-up commands (``make demo``, ``make test``) are what CI itself runs, so they are
not run again here. Collected from README.md itself, so the tutorial cannot drift.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text(encoding="utf-8"))]


def _shell_commands(code: str) -> list[str]:
    lines = [ln.split("  #")[0].strip() for ln in code.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith("make ")]


def test_readme_has_the_blocks_a_newcomer_follows():
    kinds = [k for k, _ in _blocks()]
    assert kinds[0] == "bash" and "make demo" in _blocks()[0][1] and "make test" in _blocks()[0][1]
    assert kinds.count("python") >= 6


@pytest.mark.timeout(1500)
def test_readme_blocks_run_as_written_in_order(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDAUDIT_CACHE", str(tmp_path / "cache"))
    audit_cli = Path(sys.executable).with_name("audit")
    namespace: dict = {"__name__": "__readme__"}
    for i, (kind, code) in enumerate(_blocks(), start=1):
        if kind == "python":
            try:
                exec(compile(code, f"README.md python block {i}", "exec"), namespace)
            except Exception as e:  # noqa: BLE001 - report which block failed and why
                raise AssertionError(f"README block {i} failed: {type(e).__name__}: {e}\n---\n{code}") from e
            continue
        for cmd in _shell_commands(code):
            argv = shlex.split(cmd)
            assert argv[0] == "audit", f"README block {i}: unexpected shell command {cmd!r}"
            run = subprocess.run([str(audit_cli), *argv[1:]], capture_output=True, text=True, timeout=900,
                                 env={**os.environ, "COLUMNS": "120"})
            assert run.returncode == 0, f"README block {i}: {cmd!r} exited {run.returncode}:\n{run.stderr[-2000:]}"
