"""Speed of exact contrast Shapley (probes.interventions.contrast_shapley, 2^M batched coalitions)
against Captum's ShapleyValues (M!·M + 1 permutation evaluations) on the same per-case value.

Prints the median time of each (interleaved repeats after one warm-up) and the ratio
captum / medaudit (goal ≥ 5×), and checks both give the same φ.
Usage: python benchmarks/bench_shapley.py [--n 8] [--size 64] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes.interventions import contrast_shapley  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    import timm
    from captum.attr import ShapleyValues

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=2).eval()
    x = torch.randn(a.n, 4, a.size, a.size)
    y = torch.arange(a.n) % 2
    mask = torch.arange(4).view(1, 4, 1, 1)
    sv = ShapleyValues(lambda z: torch.softmax(model(z), 1))

    def ours():
        return contrast_shapley(model, x, None, "prob", labels=y, per_case=True, batch_size=64).phi

    def captum():
        with torch.no_grad():
            return sv.attribute(x, baselines=0.0, target=y, feature_mask=mask)[:, :, 0, 0].numpy()

    err = np.abs(ours() - captum()).max()   # warm-up and agreement
    t_ours, t_cap = [], []
    for _ in range(a.repeats):
        for f, ts in ((ours, t_ours), (captum, t_cap)):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    mo, mc = statistics.median(t_ours), statistics.median(t_cap)
    print(f"resnet18, {a.n} cases 4x{a.size}^2, torch threads {torch.get_num_threads()}: "
          f"medaudit {mo:.3f} s, captum {mc:.3f} s, ratio captum/medaudit = {mc / mo:.1f}x "
          f"(max |phi diff| {err:.1e})")


if __name__ == "__main__":
    main()
