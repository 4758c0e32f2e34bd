"""The tutorial notebooks in ``notebooks/`` run top to bottom and show what they claim.

Each notebook is executed with nbclient in a fresh kernel of *this* interpreter (a private
kernelspec whose argv is ``sys.executable``, so a ``python3`` kernelspec elsewhere on the machine
cannot redirect it to another environment), in a temporary working folder, with one BLAS/OpenMP
thread and ``TMPDIR`` inside that folder (the notebooks write only to a temporary folder).
A cell appended to the executed copy reports the kernel's interpreter and the notebook's final
``checks`` dict; the test asserts a property of each notebook's result that holds only if the
instruments work (the planted shortcut is found, the simulated AI effect is recovered). The
committed notebooks carry no outputs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_probing", "02_explanations", "03_reader_study")
CELL_TIMEOUT_S = 300
MARK = "MEDAUDIT-NOTEBOOK-RESULT "
REPORT_CELL = (
    "import json as _json, sys as _sys, time as _time\n"
    f"print({MARK!r} + _json.dumps({{'prefix': _sys.prefix, 'executable': _sys.executable, "
    "'cpu_s': _time.process_time(), 'checks': checks}, default=str))"
)


def _kernel_manager(folder: Path) -> KernelManager:
    """A ``python3`` kernel that runs ``sys.executable`` (the interpreter running the tests)."""
    spec = folder / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (medaudit tests)", "language": "python"}))
    return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder)]))


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    """One model cache for the notebooks of this module: 01 and 02 train the same model (same
    cohort and training config, hence the same cache key), so 02 loads what 01 trained."""
    return tmp_path_factory.mktemp("notebook_cache")


def _run(name: str, tmp_path: Path, cache: Path | None = None) -> tuple[nbformat.NotebookNode, dict, float]:
    """Execute notebook ``name``; returns the executed copy, the reported dict and the wall time."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(REPORT_CELL))
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend
    env["MEDAUDIT_CACHE"] = str(cache or tmp_path / "cache")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TMPDIR=str(tmp),
               PYTHONHASHSEED="0")
    client = NotebookClient(nb, km=_kernel_manager(tmp_path / "kernels"), kernel_name="python3",
                            timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(work)}})
    t0 = time.perf_counter()
    client.execute(env=env)
    wall = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    text = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []) if o.get("output_type") == "stream")
    lines = [ln for ln in text.splitlines() if ln.startswith(MARK)]
    assert lines, f"{name}: the report cell printed nothing:\n{text[-2000:]}"
    return nb, json.loads(lines[-1][len(MARK):]), wall


def _check_probing(c: dict) -> None:
    # the model learned the planted marker, and only the marker
    assert c["test_accuracy"] > 0.85, c
    assert c["test_no_marker_accuracy"] < 0.7, c
    assert c["hooks_verified"] is True
    # the label is linearly readable from the last block, far above the shuffled-label control
    assert c["probe_test_auc_last_block"] > 0.8, c
    assert c["probe_test_auc_last_block"] - c["control_test_auc_last_block"] > 0.2, c
    # grafting inside the skull (where the marker lies) moves p(class 1); inside the tumour it does not
    assert c["patch_delta_skull_first_block"] > c["patch_delta_gtv_first_block"] + 0.2, c


def _check_explanations(c: dict) -> None:
    # the deepest Grad-CAM maps (a 2x2 feature map, upsampled) vary over the image for (nearly) every
    # case; Grad-CAM of the class-1 logit alone may be all zero for a case (its ReLU), not for most
    assert c["gradcam_deepest_share_nonconstant"] >= 0.75, c
    assert c["gradcam_deepest_mean_std"] > 0, c
    # LRP conserves relevance and puts it on the marker, not on the (uninformative) tumour
    assert c["lrp_max_rel_error"] < 0.05, c
    assert c["lrp_marker_concentration"] > 1, c
    assert c["lrp_marker_concentration"] > c["lrp_gtv_concentration"], c
    assert c["integrated_gradients_mean_delta_aupc"] > 0, c


def _check_reader_study(c: dict) -> None:
    # the simulated AI helps: OR of a correct read > 1, and the CI covers the true OR
    assert c["ai_or"] > 1, c
    assert c["ai_or_ci_covers_truth"] is True, c
    assert c["mrmc_rrrc_p"] < 0.05, c
    assert c["instruments_failed"] == 0, c


CHECKS = {"01_probing": _check_probing, "02_explanations": _check_explanations,
          "03_reader_study": _check_reader_study}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_shows_its_result(name, tmp_path, record_property, model_cache):
    _, reported, wall = _run(name, tmp_path, model_cache)
    record_property("wall_s", round(wall, 1))
    record_property("kernel_cpu_s", round(reported["cpu_s"], 1))
    print(f"{name}: {wall:.1f} s wall, kernel CPU {reported['cpu_s']:.1f} s")
    # the kernel ran the interpreter of the tests (the venv the package is installed in)
    assert Path(reported["prefix"]).resolve() == Path(sys.prefix).resolve(), reported["executable"]
    CHECKS[name](reported["checks"])
    # nothing was written next to the notebook or into the working folder but what the kernel left
    assert not any((tmp_path / "work").iterdir()), sorted(p.name for p in (tmp_path / "work").iterdir())


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert nb.cells[0].cell_type == "markdown"
    # threads are pinned near the top, and the last code cell leaves the `checks` the test reads
    assert any("torch.set_num_threads(1)" in c.source for c in code[:2])
    assert "checks = {" in code[-1].source
