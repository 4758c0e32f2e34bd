"""Time per attribution map for every method on the demo model (Jin et al.'s G5: efficiency).

Uses the demo classifier (trained, or reused from the cache, exactly as `audit demo` does) and
2 test slices (2×4×128×128). Prints one row per method: seconds per map (median of repeats
over the batch, divided by 2) with each method's default settings. Results go into
benchmarks/README.md.

    .venv/bin/python benchmarks/bench_methods.py [--repeats 3] [--methods gradcam,lrp,...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from audit.demo import DemoConfig, cache_root
from audit.synthetic import SyntheticConfig, make_splits
from audit.training import cache_key, train_or_load
from probes.attribution import METHODS, attribute, layer_gradcam, lime_map, lrp
from probes.hooks import HookRegistry


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="")
    ap.add_argument("--warmup", type=int, default=1, help="0: skip warm-up (slow perturbation methods)")
    args = ap.parse_args()
    cfg = DemoConfig()
    splits = make_splits(SyntheticConfig(n_cases=cfg.n_cases, dim=2, size=cfg.size, q1=cfg.q1, q0=cfg.q0,
                                         seed=cfg.seed))
    folder = cache_root() / "models" / cache_key(dict(splits["train"].meta), cfg.train)
    model = train_or_load(splits, cfg.train, folder).model
    cases = list(splits["test"])[:2]
    x = torch.stack([torch.tensor(c.image) for c in cases])
    y = torch.tensor([int(c.label) for c in cases])
    reg = HookRegistry(model)
    runs = {
        "gradcam (all 8 blocks, one pass)": lambda: layer_gradcam(reg, x, y),
        "lrp epsilon_plus": lambda: lrp(model, x, y, composite="epsilon_plus"),
        "lrp epsilon_gamma_box": lambda: lrp(model, x, y, composite="epsilon_gamma_box"),
        "lime_map (1000 samples, SLIC 50)": lambda: lime_map(model, x, y, n_samples=1000),
    }
    for name in [m for m in METHODS if m not in ("gradcam", "lrp", "lime")]:  # timed above
        runs[name] = (lambda n: lambda: attribute(model, x, y, n))(name)
    wanted = [m for m in args.methods.split(",") if m]
    print(f"demo model {cfg.train.arch} {cfg.train.arch_kwargs}, batch {tuple(x.shape)}, "
          f"threads={torch.get_num_threads()}")
    print(f"{'method':40s} {'s/map':>9s}")
    for name, fn in runs.items():
        if wanted and not any(w in name for w in wanted):
            continue
        if args.warmup:
            fn()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"{name:40s} {statistics.median(times) / len(x):9.3f}", flush=True)


if __name__ == "__main__":
    main()
