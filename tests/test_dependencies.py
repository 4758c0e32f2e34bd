"""Every package that ``probes`` and ``audit`` import is declared in pyproject.toml (deptry).

deptry (https://deptry.com) reads ``[project.dependencies]`` and ``[tool.deptry]`` from
pyproject.toml and reports imports of undeclared packages (DEP001 missing, DEP003 only
installed as another package's dependency), declared packages nobody imports (DEP002) and
test-only packages imported by the library (DEP004). The second test proves the check bites:
the same configuration flags a module that imports an undeclared and a test-only package.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("probes", "audit")


def _deptry(tmp_path: Path, *paths: str) -> tuple[int, list[dict], str]:
    """Run deptry from the repository root (so it reads pyproject.toml) on ``paths``."""
    report = tmp_path / "deptry.json"
    proc = subprocess.run([sys.executable, "-m", "deptry", *paths, "--json-output", str(report)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert report.exists(), f"deptry wrote no report (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.returncode, json.loads(report.read_text()), proc.stdout + proc.stderr


def test_every_imported_package_is_declared(tmp_path):
    rc, violations, log = _deptry(tmp_path, *PACKAGES)
    found = [f"{v['location']['file']}:{v['location']['line']}: {v['error']['code']} {v['error']['message']}"
             for v in violations]
    assert found == [], "deptry found dependency problems:\n" + "\n".join(found)
    assert rc == 0, log


def test_deptry_flags_undeclared_and_test_only_imports(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    # joblib comes only through scikit-learn; pytest only through the test extra
    (extra / "undeclared.py").write_text("import joblib\nimport pytest\n")
    rc, violations, _ = _deptry(tmp_path, *PACKAGES, str(extra))
    codes = {v["module"]: v["error"]["code"] for v in violations}
    assert rc != 0
    assert codes.get("joblib") in ("DEP001", "DEP003")  # missing, or installed only transitively
    assert codes.get("pytest") == "DEP004"
    assert all(Path(v["location"]["file"]).parent == extra for v in violations)
