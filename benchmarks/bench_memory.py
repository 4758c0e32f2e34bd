"""Peak memory of the default audit on a 3D classifier vs the model's own forward+backward.

Goal: peak(audit) <= 2x peak(forward+backward). Model: MONAI ResNet-10 (``monai:resnet10``,
spatial_dims 3, 4 input channels, 2 classes, random init from the run's seed); cohort: the
synthetic 3D cohort (``SyntheticConfig(dim=3, size=96)``), the first ``--cases`` test cases;
``batch_size`` of the audit config = ``--batch``.

Arms, each in its own fresh subprocess (same imports, same data generation, same
``build_context``; the measurement starts after that):

- audit: ``run_audit(cfg, ctx=..., fresh=True)`` (every default instrument, or ``--only``).
- fwd+bwd: the model's forward + backward of the target logit over one batch of ``--batch``
  inputs (the cases, repeated when there are fewer), eval mode (as the instruments run it):
  the audit puts at most ``batch_size`` inputs in any forward.

Both arms import the libraries the instruments load lazily (captum, zennit, lime, skimage,
sklearn, pyarrow, ...) before the measurement. Peak = the process's peak resident set during the arm minus its RSS just before it (peak RSS:
``VmHWM`` after resetting it via ``/proc/self/clear_refs``, and the maximum of a 5 ms
``VmRSS`` sampler thread; the larger is used; ``ru_maxrss`` is printed too, it includes the
set-up). On CUDA (``--device cuda`` or auto when available) also
``torch.cuda.max_memory_allocated`` minus the allocation before the arm.
The audit arm also reports the RSS above base while each instrument's units ran (the sampler's
trace within each unit's start/end, timed by wrapping each registered instrument's ``run`` in
that process). ``--per-instrument``: one more audit subprocess per instrument (``only=[name]``) to say which
instrument dominates.

    .venv/bin/python benchmarks/bench_memory.py [--size 96] [--cases 4] [--batch 16] [--threads 1]
        [--only gradcam lrp ...] [--per-instrument] [--device auto]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Sampler(threading.Thread):
    """Max VmRSS (kB) every ``dt`` seconds until stopped."""

    def __init__(self, dt: float = 0.005):
        super().__init__(daemon=True)
        self.dt, self.peak, self._halt = dt, _kb("VmRSS"), threading.Event()

    def run(self) -> None:
        self.trace: list[tuple[float, int]] = []
        while not self._halt.is_set():
            v = _kb("VmRSS")
            self.peak = max(self.peak, v)
            self.trace.append((time.perf_counter(), v))
            time.sleep(self.dt)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, _kb("VmRSS"))
        return self.peak


def arm(args) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import gc
    import resource

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from audit.run import parse_config, run_audit
    from audit.run.context import build_context
    from audit.synthetic import SyntheticConfig, make_splits

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    scfg = SyntheticConfig(n_cases=int(args.cases / 0.15) + 4, dim=3, size=args.size, seed=0)
    splits = make_splits(scfg)
    out = Path(args.out)
    cfg = parse_config({
        "model": {"arch": "monai:resnet10", "arch_kwargs": {"spatial_dims": 3}, "in_chans": 4, "num_classes": 2,
                  "input_layout": "NCDHW"},
        "cohort": {"source": "synthetic", "synthetic": scfg.to_dict(), "max_cases": args.cases},
        "out": str(out), "seed": 0, "device": device, "batch_size": args.batch,
    }, "bench-memory")
    ctx = build_context(cfg, splits)
    x = ctx.x()  # the cases, loaded and preprocessed before the measurement
    # libraries the instruments import lazily, imported in both arms before the measurement
    import audit.run.instruments  # noqa: F401
    for mod in ("captum.attr", "captum.metrics", "zennit.composites", "lime.lime_image", "skimage.segmentation",
                "sklearn.linear_model", "sklearn.metrics", "pyarrow.parquet", "scipy.stats", "rich.progress"):
        try:
            __import__(mod)
        except ImportError:
            pass
    only = args.only or None
    gc.collect()
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    spans: list[tuple[str, float, float]] = []  # (instrument, start, end) of every unit, for the attribution
    if args.arm == "audit":
        import dataclasses

        from audit.run.plugin import registry

        reg = registry()
        for name, inst in list(reg.items()):
            def timed(ctx_, p_, unit, _run=inst.run, _name=name):
                t = time.perf_counter()
                try:
                    return _run(ctx_, p_, unit)
                finally:
                    spans.append((_name, t, time.perf_counter()))
            reg[name] = dataclasses.replace(inst, run=timed)
    base = _kb("VmRSS")
    hwm_ok = _reset_hwm()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    failed: list[str] = []
    if args.arm == "audit":
        from rich.console import Console

        summary = run_audit(cfg, ctx=ctx, only=only, fresh=True, console=Console(file=io.StringIO()))
        failed = [f"{f['instrument']}/{f['unit']}: {f['error'][:160]}" for f in summary.failed]
        skipped = dict(summary.skipped)
    else:
        model = ctx.model.to(ctx.device)
        was = model.training
        model.eval()
        # batch_size rows, the cases repeated when there are fewer: the audit may put that many
        # inputs (interpolation steps, perturbed copies) in one forward
        reps = -(-args.batch // ctx.n)
        xb = x.repeat(reps, *([1] * (x.dim() - 1)))[:args.batch].to(ctx.device)
        y = model(xb)
        y[:, ctx.target].sum().backward()
        del y, xb
        model.zero_grad(set_to_none=True)
        model.train(was)
        skipped = {}
    seconds = time.perf_counter() - t0
    sampled = sampler.stop()
    hwm = _kb("VmHWM") if hwm_ok else -1
    peak = max(sampled, hwm)
    res = {"arm": args.arm, "only": only, "device": device, "base_kb": base, "peak_kb": peak,
           "delta_kb": peak - base, "hwm_kb": hwm, "sampled_kb": sampled, "hwm_reset": hwm_ok,
           "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": round(seconds, 2),
           "failed": failed, "skipped": skipped, "n": ctx.n, "shape": list(x.shape[1:]),
           "threads": torch.get_num_threads()}
    if cuda:
        torch.cuda.synchronize()
        res["cuda_peak_bytes"] = torch.cuda.max_memory_allocated() - cuda_base
    if spans:
        per_peak: dict[str, int] = {}
        for name, a, b in spans:
            v = [r for t, r in sampler.trace if a <= t <= b]
            if v:
                per_peak[name] = max(per_peak.get(name, 0), max(v) - base)
        res["instrument_peak_kb"] = per_peak
    if args.arm == "audit" and (out / "manifest.json").exists():
        man = json.loads((out / "manifest.json").read_text())
        per: dict[str, float] = {}
        for u in man["units"]:
            per[u["instrument"]] = per.get(u["instrument"], 0.0) + float(u["seconds"])
        res["instrument_seconds"] = {k: round(v, 2) for k, v in per.items()}
    print("RESULT " + json.dumps(res), flush=True)


def spawn(args, arm_name: str, only: list[str] | None, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--arm", arm_name, "--size", str(args.size), "--cases", str(args.cases),
           "--batch", str(args.batch), "--threads", str(args.threads), "--device", args.device,
           "--out", str(tmp / f"out-{arm_name}-{'-'.join(only or ['all'])}")]
    if only:
        cmd += ["--only", *only]
    env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "OPENBLAS_NUM_THREADS")}, "TQDM_DISABLE": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not line:
        raise RuntimeError(f"{arm_name} {only or ''} failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def mib(kb: float) -> str:
    return f"{kb / 1024:8.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16, help="the audit config's batch_size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--only", nargs="*", default=None, help="instruments of the audit arm (default: all default ones)")
    ap.add_argument("--per-instrument", action="store_true", help="also one audit subprocess per instrument")
    ap.add_argument("--arm", choices=["audit", "fb"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        arm(args)
        return
    cache = ROOT / ".bench-cache"
    cache.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-memory-", dir=cache) as d:
        tmp = Path(d)
        fb = spawn(args, "fb", None, tmp)
        au = spawn(args, "audit", args.only, tmp)
        per = []
        if args.per_instrument:
            names = list(au.get("instrument_seconds", {}))
            per = [spawn(args, "audit", [n], tmp) for n in names]
    print(f"monai:resnet10 3D, {au['n']} cases {au['shape']}, batch_size={args.batch} (fwd+bwd batch "
          f"{args.batch}), device={au['device']}, threads={au['threads']}, "
          f"load(1 min)={os.getloadavg()[0]:.2f}")
    for r in (fb, au):
        print(f"{'fwd+bwd' if r['arm'] == 'fb' else 'audit':<8} peak-base {mib(r['delta_kb'])}  (base {mib(r['base_kb'])}, "
              f"VmHWM {mib(r['hwm_kb'])}, sampled {mib(r['sampled_kb'])}, ru_maxrss {mib(r['ru_maxrss_kb'])}) "
              f"{r['seconds']:.1f} s" + (f"  CUDA peak {r['cuda_peak_bytes'] / 2**20:.1f} MiB" if "cuda_peak_bytes" in r else ""))
    print(f"ratio (audit / fwd+bwd, RSS above base): {au['delta_kb'] / max(fb['delta_kb'], 1):.2f}x   (goal <= 2x)")
    if "cuda_peak_bytes" in au and fb.get("cuda_peak_bytes"):
        print(f"ratio (CUDA max_memory_allocated): {au['cuda_peak_bytes'] / fb['cuda_peak_bytes']:.2f}x")
    if au["failed"]:
        print("audit failures: " + "; ".join(au["failed"][:5]))
    if au["skipped"]:
        print("skipped: " + "; ".join(f"{k} ({v})" for k, v in au["skipped"].items()))
    if au.get("instrument_seconds"):
        print("audit seconds per instrument: " + ", ".join(f"{k} {v:.1f}" for k, v in au["instrument_seconds"].items()))
    if au.get("instrument_peak_kb"):
        print("\nRSS above base while each instrument's units ran (5 ms sampler; a high-water mark: "
              "memory an earlier instrument left allocated counts too):")
        for k, v in sorted(au["instrument_peak_kb"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<14}{mib(v)}  {v / max(fb['delta_kb'], 1):6.2f}x fwd+bwd")
    if per:
        print(f"\n{'instrument':<14}{'peak-base':>14}{'x fwd+bwd':>11}{'seconds':>9}")
        for r in sorted(per, key=lambda r: -r["delta_kb"]):
            print(f"{r['only'][0]:<14}{mib(r['delta_kb']):>14}{r['delta_kb'] / max(fb['delta_kb'], 1):>10.2f}x"
                  f"{r['seconds']:>9.1f}" + ("  FAILED" if r["failed"] else ""))


if __name__ == "__main__":
    main()
