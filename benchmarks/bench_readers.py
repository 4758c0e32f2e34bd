"""Patient bootstrap of per-phase AUC: vectorised cluster_bootstrap vs a loop of sklearn's roc_auc_score.

Goal: ratio ≥ 20×. Both arms bootstrap the reader-averaged empirical AUC per phase
over the same (resamples × patients) index matrix:
- ``cluster_bootstrap(reads, statistic="auc", n_boot=..., seed=...)`` (the whole public call, input validation included);
- the peer loop: for each resample, gather every read of each drawn patient (precomputed row
  indices, numpy only) and call ``sklearn.metrics.roc_auc_score`` per reader and phase.
The arms are interleaved (A, B, A, B, …) after a warm-up; medians are printed, and the two
bootstrap distributions are checked to agree (max |difference|).

    .venv/bin/python benchmarks/bench_readers.py [--cases 37] [--readers 4] [--resamples 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from audit.readers import cluster_bootstrap
from audit.readers.simulate import PHASES, simulate_reads


def loop_auc(reads, patients: tuple, idx: np.ndarray) -> np.ndarray:
    """(n, phases) reader-mean AUC per resample, one roc_auc_score call per reader × phase."""
    case = reads["case"].to_numpy()
    rows_of = [np.flatnonzero(case == p) for p in patients]
    truth, score = reads["truth"].to_numpy(), reads["score"].to_numpy()
    ph_codes, rd = reads["phase"].cat.codes.to_numpy(), reads["reader"].to_numpy()
    readers, n_ph = np.unique(rd), len(reads["phase"].cat.categories)
    out = np.empty((idx.shape[0], n_ph))
    for b in range(idx.shape[0]):
        rows = np.concatenate([rows_of[i] for i in idx[b]])
        for p in range(n_ph):
            sel = rows[ph_codes[rows] == p]
            out[b, p] = np.mean([roc_auc_score(truth[sel][rd[sel] == r], score[sel][rd[sel] == r])
                                 for r in readers])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=37)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    reads = simulate_reads(args.cases, args.readers, PHASES, odds_ratio=(1.6, 1.8), seed=args.seed)
    res = cluster_bootstrap(reads, statistic="auc", n_boot=args.resamples, seed=args.seed, differences=False)
    ref = loop_auc(reads, res.patients, res.indices)  # also the warm-up of both arms
    err = np.nanmax(np.abs(res.replicates - ref))
    print(f"{len(reads)} reads: {args.readers} readers x {args.cases} patients x {len(PHASES)} phases; "
          f"{args.resamples} patient resamples; max |vectorised - loop| = {err:.2e}")

    t_vec, t_loop = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        cluster_bootstrap(reads, statistic="auc", n_boot=args.resamples, seed=args.seed, differences=False)
        t_vec.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loop_auc(reads, res.patients, res.indices)
        t_loop.append(time.perf_counter() - t0)
    ratio = statistics.median(t_loop) / statistics.median(t_vec)
    pair = statistics.median(lo / v for lo, v in zip(t_loop, t_vec))
    print(f"cluster_bootstrap (vectorised)   median {statistics.median(t_vec) * 1e3:9.1f} ms")
    print(f"loop of roc_auc_score            median {statistics.median(t_loop) * 1e3:9.1f} ms")
    print(f"speed-up (ratio of medians)      {ratio:.1f}x   (goal >= 20x)")
    print(f"speed-up (median of pair ratios) {pair:.1f}x")


if __name__ == "__main__":
    main()
