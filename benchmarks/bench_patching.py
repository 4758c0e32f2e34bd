"""Batched activation patching vs a one-forward-per-(pair, block) loop.

Goal: ratio >= 3x. timm resnet18 (random init, 4 channels, 2 classes), 32 pairs of
4×64² inputs, every block's ``.local`` (8 points), direction source -> target, full patching.

- batched: ``probes.internals.activation_patching`` — one capture forward over all inputs, then
  one forward per point over all 32 pairs (``batch_size=64``).
- loop: per pair, one capture forward of the source (all 8 points) and one unpatched forward of
  the target, then per block one patched forward of the target (batch 1) — 32 × (2 + 8) forwards.

Both arms give the same Δp (checked once, to 1e-6). Arms interleaved after warm-up; the ratio
of medians and the median of per-repeat ratios are printed.

    .venv/bin/python benchmarks/bench_patching.py [--pairs 32] [--size 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import timm
import torch

from probes import HookRegistry
from probes.internals.patching import activation_patching


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=2, zero_init_last=False).eval()
    reg = HookRegistry(model)
    points = [f"{b}.local" for b in reg.blocks]
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(args.pairs, 4, args.size, args.size, generator=g)
    xt = torch.randn(args.pairs, 4, args.size, args.size, generator=g)

    def batched() -> np.ndarray:
        res = activation_patching(reg, xs, 1, xt, points, directions=("x->x_base",), batch_size=64)
        return res.table.sort_values(["pair", "point"])["delta"].to_numpy()

    def loop() -> np.ndarray:
        out = []
        for i in range(args.pairs):
            _, cache = reg.run_with_cache(xs[i:i + 1], points=points)
            with torch.no_grad():
                p0 = torch.softmax(model(xt[i:i + 1]).double(), 1)[0, 1]
                for p in sorted(points):
                    with reg.patch({p: cache[p]}):
                        p1 = torch.softmax(model(xt[i:i + 1]).double(), 1)[0, 1]
                    out.append(float(p1 - p0))
        return np.asarray(out)

    np.testing.assert_allclose(batched(), loop(), atol=1e-6)
    for _ in range(args.warmup):
        batched(), loop()
    t_b, t_l = [], []
    for _ in range(args.repeats):
        for fn, acc in ((batched, t_b), (loop, t_l)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    print(f"resnet18 pairs={args.pairs} size=4x{args.size}^2 points={len(points)} (.local) "
          f"threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"batched sweep      median {statistics.median(t_b) * 1e3:8.1f} ms")
    print(f"per-pair loop      median {statistics.median(t_l) * 1e3:8.1f} ms")
    print(f"ratio (medians)    {statistics.median(t_l) / statistics.median(t_b):.2f}x   (goal >= 3x)")
    print(f"ratio (pair median){statistics.median(l / b for l, b in zip(t_l, t_b)):.2f}x")


if __name__ == "__main__":
    main()
