"""The full-size demo (`make demo`): wall time per step and the demo model's accuracy.

Goal: test accuracy ≥ 0.9 (AUC ≥ 0.95) with the default configuration — 1,500 axial 128²
slices, a quarter-width ResNet-18 trained 10 epochs on the CPU — and the wall time of the whole
demo with an empty model cache, next to the time of a second run that reuses the checkpoint.
The test suite runs a small configuration of the same pipeline (`tests/audit/test_demo.py`).

    .venv/bin/python benchmarks/bench_demo.py [--out /tmp/bench_demo]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from audit.demo import DemoConfig, run_demo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_demo_"))
    os.environ["MEDAUDIT_CACHE"] = str(root / "cache")  # an empty cache: the first run trains
    quiet = Console(file=open(os.devnull, "w"))
    t0 = time.perf_counter()
    files = run_demo(root / "first", DemoConfig(), console=quiet)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_demo(root / "second", DemoConfig(), console=quiet)
    second = time.perf_counter() - t0
    steps = pd.read_csv(files["timings"])
    metrics = pd.read_csv(files["metrics"]).set_index("split")
    print(steps.to_string(index=False))
    print(metrics[["accuracy", "auc"]].round(3).to_string())
    test = metrics.loc["test"]
    print(f"whole demo, empty cache: {first:.0f} s; second run (cached checkpoint): {second:.0f} s")
    print(f"test accuracy {test['accuracy']:.3f} (goal >= 0.9), AUC {test['auc']:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
