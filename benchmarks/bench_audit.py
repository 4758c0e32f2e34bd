"""The default audit run vs the same measurements made with the peer libraries in plain loops.

Goal: the default audit (``audit.run.run_audit``, every registered default instrument) is
>= 5x faster than computing the same things "the way the seed framework does it"; and each
instrument's cost in forward+backward equivalents.

Model: the demo architecture (timm resnet18 at 1/4 width, channels 16-32-64-128, 4 -> 2)
trained briefly (``audit.training.train_or_load``, 1 epoch on a small synthetic cohort,
cached under ``--cache``) or random init (``--no-train``; the timings do not depend on
training, but with random init few pairs pass patching's confidence filter). Cases: the first
``--cases`` test cases of the synthetic demo cohort at ``--size``², counterfactual sets
t1c_only and no_marker (as the demo config).

Arms (interleaved after a warm-up on 4 cases; medians over ``--repeats``):

- audit: ``run_audit(cfg, ctx=..., fresh=True)`` into a fresh folder; per-instrument seconds
  from ``manifest.json`` ``units[*].seconds``.
- peer: per instrument, the same cases, layers, methods and sample counts, each library
  called directly in a plain loop:
  predictions: a forward per case batch and rows per case; verify: per point a capture
  forward, an identity-patched forward and a backward; gradcam: one ``pytorch_grad_cam.GradCAM``
  object per block per batch; lrp: zennit ``EpsilonGammaBox`` (same bounds) + medaudit
  canonizers, ``Gradient`` attributor, per batch; attribution: Captum ``InputXGradient`` and
  ``IntegratedGradients`` (same ``n_steps``) per batch, ``lime_image.LimeImageExplainer`` per
  case (same ``num_samples``, SLIC segments as medaudit's); localisation (IoU / hit rate at
  the percentile, relevance mass (+ positive, per area), intensity Pearson/Spearman per ROI and
  whole image) numpy/scipy loops per case, map channel and ROI; faithfulness: ΔAUPC by one
  deletion forward per (case, ordering, step), Gini per case, ``captum.metrics.sensitivity_max``;
  probes: per layer a forward hook and one pass over the cases, GAP, then per C an sklearn
  ``LogisticRegression`` (real and control labels); patching: one forward per (pair, point,
  direction, ROI control); geometry: per point one pass, cosine distances per case and ROI in
  numpy; ablation: one forward per (condition, case), sklearn ``roc_auc_score``/``roc_curve``;
  shapley: Captum ``ShapleyValues`` with a per-contrast feature mask per case (zero fill: one
  call; marginal fill: one call per draw with a donor case as baseline) — once per fill, not
  per value function; truthfulness: per method Captum/pytorch-grad-cam/zennit maps, ΔAUPC
  loop (its n_samples, steps), MSFI and Kendall τ loops.
  Instruments without a peer here are counted at the audit's time in both arms (printed).

Where the methods are the same the numbers are checked (tolerances printed): Grad-CAM maps
(per block, min-max) vs ``probes.attribution.layer_gradcam``, input×gradient and IG maps vs
``probes.attribution.attribute``, LRP (different rules on the conv layers: correlation only),
and the peer localisation of the last Grad-CAM block vs the audit table.

(2) cost in forward+backward equivalents: instrument seconds / seconds of one forward+backward
over the same cases in batches of ``batch_size`` (median of ``--fb-repeats``).

    .venv/bin/python benchmarks/bench_audit.py [--cases 64] [--size 128] [--repeats 1] [--no-train]
        [--threads 1] [--cache .bench-cache] [--only gradcam lrp ...] [--skip-peer]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _threads(argv: list[str]) -> int:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


_T = str(_threads(sys.argv))
for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_k, _T)
os.environ.setdefault("TQDM_DISABLE", "1")  # lime's progress bar

import numpy as np
import torch

sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- setup
def setup(args):
    from audit.synthetic import SyntheticConfig, make_splits

    n_total = max(int(np.ceil(args.cases / 0.15)) + 8, 200)  # make_splits' test split is 15 %
    scfg = SyntheticConfig(n_cases=n_total, dim=2, size=args.size, q1=0.9, q0=0.1, seed=0)
    splits = make_splits(scfg)
    model_spec: dict = {"num_classes": 2, "in_chans": 4, "arch": "resnet18",
                        "arch_kwargs": {"channels": [16, 32, 64, 128]}}
    if not args.no_train:
        from audit.training import TrainConfig, train_or_load

        tc = TrainConfig(epochs=args.epochs, batch_size=32)
        folder = Path(args.cache) / f"bench-audit-model-{args.size}-{n_total}"
        res = train_or_load(splits, tc, folder)
        card = res.card
        model_spec = {"path": str((folder / card["checkpoint"]).resolve()), "arch": card["arch"],
                      "arch_kwargs": card["arch_kwargs"], "num_classes": card["num_classes"],
                      "in_chans": card["in_chans"], "class_names": card["classes"]}
    base = {"model": model_spec,
            "cohort": {"source": "synthetic", "synthetic": scfg.to_dict(), "counterfactuals": ["t1c_only", "no_marker"],
                       "max_cases": args.cases},
            "seed": 0, "device": "cpu"}
    return base, splits


def make_ctx(base: dict, splits, out: Path, cases: int | None = None):
    from audit.run import parse_config
    from audit.run.context import build_context

    data = json.loads(json.dumps(base))
    if cases is not None:
        data["cohort"]["max_cases"] = cases
    data["out"] = str(out)
    cfg = parse_config(data, "bench")
    return cfg, build_context(cfg, splits)


# ----------------------------------------------------------------------------- audit arm
def run_ours(cfg, ctx, out: Path, only) -> tuple[float, dict[str, float], dict]:
    from rich.console import Console

    from audit.run import run_audit

    shutil.rmtree(out, ignore_errors=True)
    ctx.finished.clear()
    t0 = time.perf_counter()
    summary = run_audit(cfg, ctx=ctx, fresh=True, only=only, console=Console(file=io.StringIO()))
    wall = time.perf_counter() - t0
    man = json.loads((out / "manifest.json").read_text())
    per: dict[str, float] = {}
    for u in man["units"]:
        per[u["instrument"]] = per.get(u["instrument"], 0.0) + float(u["seconds"])
    if summary.failed:
        print(f"  audit: {len(summary.failed)} failure(s): " + "; ".join(
            f"{f['instrument']}/{f['unit']}: {f['error'][:120]}" for f in summary.failed[:5]))
    return wall, per, man


from audit_peers import checks, run_peer  # after the threads are pinned above


# ----------------------------------------------------------------------------- forward+backward
def fb_seconds(ctx, repeats: int) -> float:
    model = ctx.model
    was = model.training
    model.eval()
    ts = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for a in range(0, ctx.n, ctx.cfg.batch_size):
            out = model(ctx.x(a, a + ctx.cfg.batch_size))
            out[:, ctx.target].sum().backward()
        ts.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    model.train(was)
    return statistics.median(ts[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--warmup-cases", type=int, default=4, help="cases of the warm-up run of each arm (0: none)")
    ap.add_argument("--fb-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--cache", default=str(ROOT / ".bench-cache"))
    ap.add_argument("--only", nargs="*", default=None, help="instruments to run (default: every default one)")
    ap.add_argument("--skip-peer", action="store_true", help="audit and (2) only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging_quiet()

    from audit.run.plugin import registry

    base, splits = setup(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-audit-", dir=args.cache if Path(args.cache).is_dir() else None))
    try:
        cfg, ctx = make_ctx(base, splits, tmp / "out")
        names = [n for n in cfg.instrument_params() if not args.only or n in args.only]
        print(f"instruments registered: {', '.join(registry())}; run: {', '.join(names)}")
        if args.warmup_cases:
            wcfg, wctx = make_ctx(base, splits, tmp / "warm", args.warmup_cases)
            run_ours(wcfg, wctx, tmp / "warm", names)
            if not args.skip_peer:
                run_peer(wcfg, wctx, names)
        t_ours, per_ours, per_peer = [], [], []
        man = None
        for _ in range(args.repeats):
            wall, per, man = run_ours(cfg, ctx, tmp / "out", names)
            t_ours.append(wall)
            per_ours.append(per)
            if not args.skip_peer:
                pp = run_peer(cfg, ctx, names)
                per_peer.append(pp)
        fb = fb_seconds(ctx, args.fb_repeats)
        if not args.skip_peer:
            checks(cfg, ctx, tmp / "out")
        ran = [n for n in names if n in per_ours[0]]
        med_o = {n: statistics.median(r.get(n, 0.0) for r in per_ours) for n in ran}
        print(f"\nresnet18 (1/4 width) {'random init' if args.no_train else f'trained {args.epochs} epoch(s)'}; "
              f"cases={ctx.n} size=4x{args.size}^2 batch_size={cfg.batch_size} threads={torch.get_num_threads()} "
              f"repeats={args.repeats} load(1 min)={os.getloadavg()[0]:.2f}")
        if man and man.get("skipped"):
            print("skipped by the audit: " + "; ".join(f"{k} ({v})" for k, v in man["skipped"].items()))
        if not args.skip_peer:
            med_p = {n: statistics.median(r[n] for r in per_peer) for n in ran if n in per_peer[0]}
            print(f"\n{'instrument':<14}{'audit s':>10}{'peer s':>10}{'ratio':>8}")
            bad = {f["instrument"] for f in (man or {}).get("failures", [])}
            for n in ran:
                flag = "  PARTIAL: a unit failed in the audit (its time is not the full work)" if n in bad else ""
                if n in med_p:
                    print(f"{n:<14}{med_o[n]:>10.2f}{med_p[n]:>10.2f}{med_p[n] / max(med_o[n], 1e-9):>7.1f}x{flag}")
                else:
                    print(f"{n:<14}{med_o[n]:>10.2f}{'(none)':>10}   counted at the audit's time in both arms{flag}")
            so = sum(med_o.values())
            sp = sum(med_p.get(n, med_o[n]) for n in ran)
            print(f"{'total':<14}{so:>10.2f}{sp:>10.2f}{sp / so:>7.1f}x   (goal >= 5x; instrument seconds)")
            if bad:
                ok = [n for n in ran if n not in bad]
                so2, sp2 = sum(med_o[n] for n in ok), sum(med_p.get(n, med_o[n]) for n in ok)
                print(f"{'total w/o failed':<14}{so2:>10.2f}{sp2:>10.2f}{sp2 / so2:>7.1f}x   (without {', '.join(sorted(bad))})")
            wall = statistics.median(t_ours)
            print(f"audit wall (incl. planning, tables, manifest) {wall:.2f} s -> ratio {sp / wall:.1f}x")
        print(f"\none forward+backward over {ctx.n} cases (batches of {cfg.batch_size}): {fb * 1e3:.1f} ms "
              f"(median of {args.fb_repeats})")
        print(f"{'instrument':<14}{'seconds':>10}{'fwd+bwd equiv.':>16}")
        for n in ran:
            print(f"{n:<14}{med_o[n]:>10.2f}{med_o[n] / fb:>16.1f}")
        print(f"{'total':<14}{sum(med_o.values()):>10.2f}{sum(med_o.values()) / fb:>16.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def logging_quiet() -> None:
    import logging

    for name in ("lime", "captum", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
