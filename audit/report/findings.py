"""Findings: rules over an audit run's tables, each with its evidence and its statistics.

A rule (``audit.report.rules``, one entry of :data:`RULES`) gathers, per subject (a class and a
region, a contrast, a method ...), the lines of evidence about one mechanism — each an effect
size with its 95% CI, a test, its p and n, and the tables it rests on — into one
:class:`Finding`. After every rule has run, the p of every test of the run is adjusted together
(Holm, ``statsmodels.stats.multitest.multipletests``), and each rule judges its findings on
the adjusted p: flagged with a severity (``critical``, ``major``, ``minor``, ``info``) and a
plain sentence, or "tested and not flagged" with its numbers. A finding's id is a fingerprint
of its rule and subject, the same across reruns.

``findings.json`` (:meth:`Findings.to_json`) holds every finding, flagged or not, with every
number; its schema is in ``docs/findings.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.report.tables import RunTables

__all__ = ["RULES", "SEVERITIES", "Evidence", "Finding", "FindingParams", "Findings", "Rule", "evaluate_findings"]

SEVERITIES = ("critical", "major", "minor", "info")
SCHEMA_VERSION = 1


@dataclass
class Evidence:
    """One line of evidence: ``effect`` (named by ``statistic``) with its 95% CI, the ``test``
    and its ``p`` (None for a descriptive line), ``p_adj`` (Holm over every test of the run,
    filled in by :func:`evaluate_findings`), ``n`` and the tables and figure it rests on."""

    label: str
    statistic: str
    effect: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    test: str = ""
    p: float | None = None
    n: int = 0
    tables: tuple[str, ...] = ()
    figure: str = ""
    p_adj: float | None = None

    def significant(self, alpha: float) -> bool:
        """Adjusted p below ``alpha`` (False for a descriptive line or an undefined p)."""
        return self.p_adj is not None and not math.isnan(self.p_adj) and self.p_adj < alpha


@dataclass
class Finding:
    """A rule's statement about one subject, with its evidence (see the module docstring)."""

    rule: str
    subject: dict[str, str]
    evidence: list[Evidence] = field(default_factory=list)
    flagged: bool = False
    severity: str = "info"
    sentence: str = ""
    headline: int = 0  # the evidence line the sentence leads with

    @property
    def id(self) -> str:
        """Fingerprint of rule + subject: stable across reruns of the same audit."""
        text = json.dumps({"rule": self.rule, "subject": self.subject}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def lead(self) -> Evidence | None:
        """The headline evidence line (None when the finding has none)."""
        return self.evidence[self.headline] if self.evidence else None

    def to_dict(self) -> dict[str, Any]:
        """Every field, numbers included; NaN as null (JSON has no NaN)."""
        lead = self.lead
        d = {"id": self.id, "rule": self.rule, "severity": self.severity, "flagged": self.flagged,
             "subject": self.subject, "sentence": self.sentence,
             "effect": None if lead is None else lead.effect, "statistic": None if lead is None else lead.statistic,
             "ci_low": None if lead is None else lead.ci_low, "ci_high": None if lead is None else lead.ci_high,
             "test": None if lead is None else lead.test, "p": None if lead is None else lead.p,
             "p_adj": None if lead is None else lead.p_adj, "n": None if lead is None else lead.n,
             "tables": sorted({t for e in self.evidence for t in e.tables}),
             "evidence": [asdict(e) for e in self.evidence]}
        return _clean(d)


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python, tuples → lists."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


@dataclass(frozen=True)
class FindingParams:
    """Thresholds of the rules. ``alpha``: family-wise level after Holm; ``target_rois``: the
    clinical target (a shortcut is a region outside it); ``ignore_rois``: regions that contain
    the target, where an effect is expected (the brain); ``min_auc_drop``: the smallest AUC drop
    of an ablation that counts; ``critical_auc_drop``: a drop that makes a shortcut critical;
    ``min_prob_shift``: the smallest fall of p(target) in the explained class's cases, when a region
    is removed, that counts as reliance on it even where the AUC holds;
    ``min_enrichment``: relevance-per-area ratio (region / target) that counts; ``high_rho``:
    an attribution–intensity correlation called high; ``anatomy_margin``: how much more AUC the
    brightest voxels must cost than removing the target's anatomy (its regions, the brain) for an
    intensity heuristic — bright voxels that are the lesion are no heuristic; ``coarse_voxels``:
    a map with at most this many cells along an axis cannot localise a region; ``n_boot``,
    ``seed``: bootstrap resamples and seed."""

    alpha: float = 0.05
    target_rois: tuple[str, ...] = ("gtv", "enhancement", "necrosis", "oedema")
    ignore_rois: tuple[str, ...] = ("brain",)
    min_auc_drop: float = 0.05
    critical_auc_drop: float = 0.2
    min_prob_shift: float = 0.1
    min_enrichment: float = 1.5
    high_rho: float = 0.3
    anatomy_margin: float = 0.1
    coarse_voxels: int = 3
    n_boot: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class Rule:
    """A rule: ``collect(tables, params) -> findings`` (evidence with raw p) and
    ``judge(finding, tables, params)`` (flags it and writes its sentence, on adjusted p)."""

    name: str
    collect: Callable[[RunTables, FindingParams], list[Finding]]
    judge: Callable[[Finding, RunTables, FindingParams], None]
    doc: str = ""


RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add a rule to :data:`RULES` (its name must be new)."""
    if rule.name in RULES:
        raise ValueError(f"rule {rule.name!r} is already registered")
    RULES[rule.name] = rule
    return rule


@dataclass
class Findings:
    """Every finding of a run, flagged ones first (by severity), then "tested and not flagged"."""

    findings: list[Finding]
    alpha: float
    n_tests: int
    rules_run: list[str]

    @property
    def flagged(self) -> list[Finding]:
        """The flagged findings, most severe first."""
        return [f for f in self.findings if f.flagged]

    @property
    def not_flagged(self) -> list[Finding]:
        """What was tested and found clean, with its numbers."""
        return [f for f in self.findings if not f.flagged]

    def by_id(self, fid: str) -> Finding:
        """The finding with id ``fid``."""
        for f in self.findings:
            if f.id == fid:
                return f
        raise KeyError(fid)

    def to_frame(self) -> pd.DataFrame:
        """One row per evidence line (tidy): id, rule, severity, flagged, subject, label, statistic,
        effect, ci_low, ci_high, test, p, p_adj, n."""
        rows = []
        for f in self.findings:
            for e in f.evidence:
                rows.append({"id": f.id, "rule": f.rule, "severity": f.severity, "flagged": f.flagged,
                             "subject": json.dumps(f.subject, sort_keys=True), "label": e.label,
                             "statistic": e.statistic, "effect": e.effect, "ci_low": e.ci_low, "ci_high": e.ci_high,
                             "test": e.test, "p": e.p, "p_adj": e.p_adj, "n": e.n})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """The ``findings.json`` document (schema in ``docs/findings.md``)."""
        return {"schema_version": SCHEMA_VERSION, "alpha": self.alpha, "adjustment": "holm", "n_tests": self.n_tests,
                "rules_run": self.rules_run, "findings": [f.to_dict() for f in self.findings]}

    def to_json(self, path: str | Path) -> Path:
        """Write ``findings.json`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=False, allow_nan=False), encoding="utf-8")
        tmp.replace(path)
        return path

    def summary(self) -> str:
        """One line per finding: severity, sentence."""
        lines = [f"{len(self.flagged)} finding(s), {len(self.not_flagged)} tested and not flagged; "
                 f"{self.n_tests} tests, Holm-adjusted at alpha = {self.alpha:g}"]
        lines += [f"[{f.severity}] {f.sentence}" for f in self.flagged]
        lines += [f"[not flagged] {f.sentence}" for f in self.not_flagged]
        return "\n".join(lines)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p (``statsmodels.stats.multitest.multipletests(method="holm")``)."""
    from statsmodels.stats.multitest import multipletests

    if len(p) == 0:
        return np.asarray(p, dtype=float)
    return multipletests(np.asarray(p, dtype=float), method="holm")[1]


def evaluate_findings(out: str | Path | RunTables, params: FindingParams | None = None,
                      rules: list[str] | None = None) -> Findings:
    """Run the rules (default: every one of :data:`RULES`) over the run in ``out``; Holm over
    every test they made; judge each finding. Deterministic: same tables, same findings."""
    import audit.report.rules  # noqa: F401  (registers the rules)

    t = out if isinstance(out, RunTables) else RunTables(out)
    prm = params or FindingParams()
    names = list(rules or RULES)
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise KeyError(f"unknown rule {unknown[0]!r}; rules: {', '.join(RULES)}")
    collected = [(name, f) for name in names for f in RULES[name].collect(t, prm)]
    found = [f for _, f in collected]
    lines = [e for f in found for e in f.evidence if e.p is not None and not math.isnan(e.p)]
    adjusted = holm(np.array([e.p for e in lines]))
    for e, pa in zip(lines, adjusted):
        e.p_adj = float(pa)
    for name, f in collected:  # the rule that collected a finding judges it (one rule may write several kinds)
        RULES[name].judge(f, t, prm)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    found.sort(key=lambda f: (not f.flagged, order.get(f.severity, 9), f.rule, f.id))
    return Findings(found, prm.alpha, len(lines), names)
