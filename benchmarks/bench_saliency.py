"""Per-layer Grad-CAM for all blocks: layer_gradcam (one forward+backward) vs pytorch-grad-cam.

pytorch-grad-cam averages several target layers into one map, so per-layer maps need one
``GradCAM(model, target_layers=[block])`` object per block, each called once (one forward +
one backward each). Goal: speed ratio >= 0.8 x number of blocks (12.8x for resnet50's 16).
Arms interleaved (A, B, A, B, ...) after warm-up; medians and the median of pair ratios.

    .venv/bin/python benchmarks/bench_saliency.py [--batch 2] [--size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from probes import HookRegistry
from probes.attribution import layer_gradcam


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.arch, pretrained=False, in_chans=4, num_classes=2).eval()
    reg = HookRegistry(model)
    mods = dict(model.named_modules())
    x = torch.randn(args.batch, 4, args.size, args.size)
    target = [k % 2 for k in range(args.batch)]

    def ours() -> None:
        layer_gradcam(reg, x, target, normalize="minmax")

    def peer() -> None:
        for b in reg.blocks:
            with GradCAM(model, target_layers=[mods[b]]) as cam:
                cam(x, targets=[ClassifierOutputTarget(k) for k in target])

    for _ in range(args.warmup):
        ours(), peer()
    t_ours, t_peer = [], []
    for _ in range(args.repeats):
        for fn, acc in ((ours, t_ours), (peer, t_peer)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)  # grad-cam's loss.backward() leaves parameter .grad
    ratio = statistics.median(t_peer) / statistics.median(t_ours)
    pair = statistics.median(p / o for p, o in zip(t_peer, t_ours))
    goal = 0.8 * len(reg.blocks)
    print(f"{args.arch} batch={args.batch} size={args.size} threads={torch.get_num_threads()} "
          f"blocks={len(reg.blocks)} repeats={args.repeats}")
    print(f"layer_gradcam (1 pass)          median {statistics.median(t_ours) * 1e3:9.1f} ms")
    print(f"pytorch-grad-cam ({len(reg.blocks)} objects)   median {statistics.median(t_peer) * 1e3:9.1f} ms")
    print(f"speed-up (medians)    {ratio:.1f}x   (goal >= {goal:.1f}x)")
    print(f"speed-up (pair median){pair:.1f}x")


if __name__ == "__main__":
    main()
