"""Cost of capturing every block's residual stream: run_with_cache(.resid) vs a plain forward.

Goal: ratio <= 1.15 on timm resnet50. Both arms run under torch.no_grad, interleaved
(A, B, A, B, ...) after warm-up so machine noise hits both alike; the ratio of medians and the
median of per-pair ratios are printed.

    .venv/bin/python benchmarks/bench_hooks.py [--batch 8] [--size 224] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

from probes import HookRegistry


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.arch, pretrained=False, in_chans=4, num_classes=2).eval()
    reg = HookRegistry(model)
    points = [f"{b}.resid" for b in reg.blocks]
    x = torch.randn(args.batch, 4, args.size, args.size)

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def cached() -> None:
        reg.run_with_cache(x, points=points)

    for _ in range(args.warmup):
        plain(), cached()
    t_plain, t_cache = [], []
    for _ in range(args.repeats):
        for fn, acc in ((plain, t_plain), (cached, t_cache)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    ratio_of_medians = statistics.median(t_cache) / statistics.median(t_plain)
    pair_ratio = statistics.median(c / p for c, p in zip(t_cache, t_plain))
    print(f"{args.arch} batch={args.batch} size={args.size} threads={torch.get_num_threads()} "
          f"points={len(points)} repeats={args.repeats}")
    print(f"plain forward      median {statistics.median(t_plain) * 1e3:8.1f} ms")
    print(f"run_with_cache     median {statistics.median(t_cache) * 1e3:8.1f} ms")
    print(f"ratio (medians)    {ratio_of_medians:.3f}x   (goal <= 1.15x)")
    print(f"ratio (pair median){pair_ratio:.3f}x")


if __name__ == "__main__":
    main()
