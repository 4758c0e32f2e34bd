"""Simulated reader studies with a known effect of AI assistance (for tests, demos and docs).

Design: ``n_readers`` readers each read every case in every phase (fully crossed), e.g.
phase 1 "MRI" alone, phase 2 "MRI+AI" (the AI probability shown), phase 3 "MRI+AI+XAI".

Model (a latent-threshold model whose *marginal* means are logistic by construction):
for case c (truth t_c), reader r and phase p,

    p_rp   = expit(logit(base_accuracy) + a_r + β_p),   a_r ~ N(0, reader_sd²) (reader effect),
             β_1 = 0, β_p = log odds_ratio_p (phase p vs the first phase)
    Z_crp  = √ρ_c·U_c + √ρ_rc·V_cr + √ρ_ai·E_c^AI·1[p shows AI] + √(1 − ρ_c − ρ_rc − ρ_ai·1[…])·E_crp
    correct_crp = 1[Z_crp < Φ⁻¹(p_rp)]

with U_c (case difficulty, shared by every reader and phase and by the AI), V_cr (reader×case),
E_c^AI (the AI's own error on the case, followed by readers who see the AI) and E_crp
independent N(0, 1). Z_crp is N(0, 1) for every read, so P(correct | reader, phase) = p_rp
exactly: the population-averaged (marginal over cases) model logit P = α + a_r + β_p holds, and
``odds_ratio`` is the known value of the phase odds ratio that a GEE of correctness on
C(phase) + C(reader) clustered by case estimates (:func:`audit.readers.gee.gee_assistance`).
It is *not* the case-conditional OR of a random-intercept GLMM, which is larger here (reads of a
case are correlated through U_c); nor, because of non-collapsibility, the OR of a GEE without the
reader term — that one is stored in ``attrs["true_or_pooled"]`` (computed from the realised a_r:
logit of the reader-averaged p_rp).

Reads: decision = truth if correct else 1 − truth. The reader's evidence for "positive" is
e = (2t − 1)(Φ⁻¹(p_rp) − Z_crp) (so decision = 1[e > 0]); the confidence ``score`` is
100·Φ(k·e) rounded to an integer (``score="percent"``) or binned into a 1–5 rating
(``score="rating"``, cut points 20/40/60/80 %). ``ai_prob`` is the AI's probability for the case,
Φ(k_AI·e_AI) (k_AI = ``ai_sharpness``) with
e_AI = (2t − 1)(Φ⁻¹(ai_accuracy) − √ρ_c·U_c − √(1 − ρ_c)·E_c^AI), the same in every row of
the case (readers see it only in the phases after the first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from scipy import special, stats

from probes.core.errors import OptionError
from probes.core.validate import check_choice, check_int

__all__ = ["simulate_reads", "write_example_reads", "example_reads", "PHASES"]

PHASES = ("MRI", "MRI+AI", "MRI+AI+XAI")


def _prob(x: float, name: str) -> float:
    x = float(x)
    if not 0 < x < 1:
        raise OptionError(name, message=f"{name} must lie in (0, 1), got {x!r}")
    return x


def simulate_reads(n_cases: int = 37, n_readers: int = 4, phases: Sequence[str] = PHASES, *,
                   odds_ratio: float | Sequence[float] = 1.6, base_accuracy: float = 0.72,
                   reader_sd: float = 0.3, case_corr: float = 0.3, reader_case_corr: float = 0.15,
                   ai_reliance: float = 0.2, ai_accuracy: float = 0.85, prevalence: float = 0.5,
                   score: Literal["percent", "rating"] = "percent", sharpness: float = 1.5,
                   ai_sharpness: float = 0.8,
                   seed: int | None = 0) -> pd.DataFrame:
    """Simulate a fully crossed reader study with a known marginal odds ratio per phase.

    See the module docstring for the model. ``odds_ratio`` is the population-averaged odds
    ratio of a correct read in each phase after the first vs the first phase (a scalar applies
    to every later phase), conditional on reader — what ``gee_assistance`` estimates.
    ``case_corr`` (ρ_c), ``reader_case_corr`` (ρ_rc) and ``ai_reliance`` (ρ_ai) are shares of the
    latent variance and must sum to < 1. The number of positive cases is
    round(prevalence · n_cases) (at least one of each class), placed at random.

    Returns one row per read: reader ("R1", …), case ("P001", …), truth, phase (ordered
    categorical), decision, score, ai_prob. ``attrs`` holds ``true_or`` (phase → marginal OR vs
    the first phase, conditional on reader), ``true_or_pooled`` (the reader-pooled marginal OR),
    ``reader_effects`` (a_r) and the arguments.
    """
    phases = tuple(phases)
    if len(phases) < 2 or len(set(phases)) != len(phases):
        raise OptionError("phases", message=f"phases must be ≥ 2 distinct names, got {phases!r}")
    check_int(n_cases, "n_cases", 2)
    check_int(n_readers, "n_readers", 1)
    ors = np.atleast_1d(np.asarray(odds_ratio, dtype=float))
    if ors.size == 1:
        ors = np.repeat(ors, len(phases) - 1)
    if ors.shape != (len(phases) - 1,) or not (np.isfinite(ors).all() and (ors > 0).all()):
        raise OptionError("odds_ratio",
            message=f"odds_ratio must be a positive scalar or {len(phases) - 1} positive values "
                         f"(one per phase after {phases[0]!r}), got {odds_ratio!r}")
    base_accuracy = _prob(base_accuracy, "base_accuracy")
    ai_accuracy = _prob(ai_accuracy, "ai_accuracy")
    prevalence = _prob(prevalence, "prevalence")
    shares = {"case_corr": case_corr, "reader_case_corr": reader_case_corr, "ai_reliance": ai_reliance}
    if any(v < 0 for v in shares.values()) or sum(shares.values()) >= 1:
        raise OptionError("case_corr",
            message=f"case_corr, reader_case_corr and ai_reliance must be ≥ 0 and sum to < 1, got {shares}")
    if reader_sd < 0 or sharpness <= 0 or ai_sharpness <= 0:
        raise OptionError("reader_sd",
            message=f"reader_sd must be ≥ 0 and sharpness, ai_sharpness > 0, got {reader_sd!r}, "
                         f"{sharpness!r}, {ai_sharpness!r}")
    check_choice(score, "score", ("percent", "rating"))

    rng = np.random.default_rng(seed)
    c, r, p = int(n_cases), int(n_readers), len(phases)
    n_pos = min(max(int(round(prevalence * c)), 1), c - 1)
    truth = np.zeros(c, dtype=int)
    truth[rng.permutation(c)[:n_pos]] = 1
    a_r = rng.normal(0.0, reader_sd, r)
    beta = np.concatenate([[0.0], np.log(ors)])
    prob = special.expit(special.logit(base_accuracy) + a_r[:, None] + beta[None, :])  # (r, p)
    u = rng.standard_normal(c)
    v = rng.standard_normal((c, r))
    e_ai = rng.standard_normal(c)
    e = rng.standard_normal((c, r, p))
    shows_ai = np.arange(p) > 0
    rho_ai = ai_reliance * shows_ai  # (p,)
    rest = np.sqrt(1.0 - case_corr - reader_case_corr - rho_ai)
    z = (np.sqrt(case_corr) * u[:, None, None] + np.sqrt(reader_case_corr) * v[:, :, None]
         + np.sqrt(rho_ai)[None, None, :] * e_ai[:, None, None] + rest[None, None, :] * e)
    sign = (2 * truth - 1)[:, None, None]
    evidence = sign * (stats.norm.ppf(prob)[None] - z)  # (c, r, p)
    decision = (evidence > 0).astype(int)
    conf = stats.norm.cdf(sharpness * evidence)
    scores = np.rint(100 * conf) if score == "percent" else 1.0 + np.searchsorted([0.2, 0.4, 0.6, 0.8], conf)
    z_ai = np.sqrt(case_corr) * u + np.sqrt(1 - case_corr) * e_ai
    ai_prob = np.round(stats.norm.cdf(ai_sharpness * (2 * truth - 1) * (stats.norm.ppf(ai_accuracy) - z_ai)), 3)

    ci, ri, pi = np.meshgrid(np.arange(c), np.arange(r), np.arange(p), indexing="ij")
    ci, ri, pi = ci.ravel(), ri.ravel(), pi.ravel()
    width = len(str(c))
    df = pd.DataFrame({
        "reader": np.array([f"R{k + 1}" for k in range(r)])[ri],
        "case": np.array([f"P{k + 1:0{max(width, 3)}d}" for k in range(c)])[ci],
        "truth": truth[ci],
        "phase": pd.Categorical(np.asarray(phases, dtype=object)[pi], categories=list(phases), ordered=True),
        "decision": decision.ravel(),
        "score": scores.ravel().astype(float),
        "ai_prob": ai_prob[ci],
    })
    df = df.sort_values(["phase", "reader", "case"], kind="stable").reset_index(drop=True)
    pooled = prob.mean(axis=0)
    df.attrs.update({
        "true_or": {ph: float(o) for ph, o in zip(phases[1:], ors)},
        "true_or_pooled": {ph: float(np.exp(special.logit(pooled[k]) - special.logit(pooled[0])))
                           for k, ph in enumerate(phases) if k > 0},
        "reader_effects": {f"R{k + 1}": float(a) for k, a in enumerate(a_r)},
        "base_accuracy": base_accuracy, "seed": seed,
    })
    return df


def example_reads() -> pd.DataFrame:
    """The package's example study: 4 readers × 37 patients × 3 phases = 444 reads.

    True marginal ORs vs "MRI" (conditional on reader): 1.6 for "MRI+AI", 1.8 for
    "MRI+AI+XAI"; 0–100 confidence scores; the AI's probability in ``ai_prob``. Deterministic.
    With 37 patients the sampling error of an OR is large (SE of log OR ≈ 0.27), so for the demo
    the seed is one (49, of seeds 0–59) whose GEE estimates land within 10% of the truth
    (exchangeable GEE: OR 1.57 and 1.82); most seeds show a weaker or stronger effect.
    """
    return simulate_reads(37, 4, PHASES, odds_ratio=(1.6, 1.8), seed=49)


def write_example_reads(path: str | Path) -> pd.DataFrame:
    """Write :func:`example_reads` to ``path`` as CSV (columns reader, case, truth, phase,
    decision, score, ai_prob) and return the table. The file is byte-identical on every call."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise OptionError("path", message=f"path must end in .csv, got {str(path)!r}")
    df = example_reads()
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    out["score"] = out["score"].astype(int)
    out.to_csv(path, index=False, lineterminator="\n")
    return df
