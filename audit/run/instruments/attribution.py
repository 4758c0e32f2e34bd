"""Input attributions of the Captum family and LIME (``probes.attribution.attribute``), one unit
per method × case batch, with localisation and faithfulness.

Sampling methods (``METHODS[m].kind == "perturbation"``: LIME, occlusion, Kernel SHAP, Shapley
sampling, ...) cost hundreds of forwards per case: they run on the first ``sampled_cases``
audited cases only, with the fewer samples of ``options`` (LIME 200 instead of 1000).

A segmenter is explained through its mean foreground score inside the ROI ``roi`` of each case
(:class:`RoiScore`: scores (N, K) = mean of the class-k logits over the ROI's voxels), so the
attribution answers "what makes the model segment this lesion".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from audit.run.context import Context
from audit.run.instruments._maps import MapParams, faithfulness, keep_shown, localisation
from audit.run.plugin import Instrument, Unit, batches, register
from probes.attribution import METHODS, attribute, row_options


def _default_options() -> dict[str, dict[str, Any]]:
    return {"lime": {"n_samples": 200}, "kernel_shap": {"n_samples": 100}, "shapley_value_sampling": {"n_samples": 5},
            "integrated_gradients": {"n_steps": 16}, "smoothgrad": {"n_samples": 16}, "gradient_shap": {"n_samples": 16}}


class AttributionParams(MapParams):
    """``methods``: names of ``probes.attribution.METHODS`` (not gradcam/lrp: own instruments);
    ``options``: per-method keyword overrides (defaults: fewer samples, see module docstring);
    ``sampled_cases``: sampling methods run on this many cases; ``roi``: a segmenter's ROI."""

    methods: list[str] = Field(default_factory=lambda: ["input_x_gradient", "integrated_gradients", "lime"])
    options: dict[str, dict[str, Any]] = Field(default_factory=_default_options)
    sampled_cases: int = 8
    roi: str = "gtv"

    @field_validator("methods")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        allowed = sorted(k for k in METHODS if k not in ("gradcam", "lrp"))
        for m in v:
            if m not in allowed:
                raise ValueError(f"{m!r} is not one of {', '.join(allowed)} (gradcam and lrp are instruments "
                                 "of their own)")
        return v


class RoiScore(nn.Module):
    """(N, K) scores of a segmenter: the mean class-k output over each case's ROI voxels.

    A batch that is a multiple of the masks' N (Captum's expanded batches repeat the cases in
    order) reuses the masks tiled.
    """

    def __init__(self, model: nn.Module, roi: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("roi", torch.as_tensor(roi, dtype=torch.float32)[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        m = self.roi.repeat(x.shape[0] // self.roi.shape[0], *([1] * (self.roi.ndim - 1)))
        return (out * m).flatten(2).sum(2) / m.flatten(2).sum(2).clamp_min(1.0)


def _plan(ctx: Context, p: AttributionParams) -> list[Unit]:
    units = []
    for m in p.methods:
        n = min(ctx.n, p.sampled_cases) if METHODS[m].kind == "perturbation" else ctx.n
        units += batches(n, ctx.cfg.batch_size, f"{m}", method=m, q=p.q)
    return units


def _run(ctx: Context, p: AttributionParams, unit: Unit) -> dict[str, object]:
    a, b, method = unit.spec["start"], unit.spec["stop"], unit.spec["method"]
    model: nn.Module = ctx.model
    if ctx.task == "segmentation":
        model = RoiScore(ctx.model, ctx.masks(a, b, (p.roi,))[p.roi]).eval()
    opts = {**row_options(method, p.rows(ctx), b - a), **p.options.get(method, {})}
    seed = ctx.unit_seed("attribution", unit.key)
    res = attribute(model, ctx.x(a, b), ctx.target, method, case_ids=ctx.case_ids(a, b),
                    contrasts=list(ctx.channels), seed=seed, **opts)
    out: dict[str, object] = {"localisation": localisation(ctx, unit, res.maps, method)}
    if p.faithfulness and ctx.task == "classification":
        def explain(x, target=None):
            return attribute(ctx.model, x, ctx.target if target is None else target, method, seed=seed, **opts).maps
        sampled = METHODS[method].kind == "perturbation"
        faith = faithfulness(ctx, unit, p, res.maps, method, None if sampled else explain)
        if faith is not None:
            out["faithfulness"] = faith
    keep_shown(out, f"maps_{method}", ctx, unit, p, res.maps)
    return out


register(Instrument("attribution", AttributionParams, _plan, _run, tables=("localisation", "faithfulness"),
                    doc="Captum-family attributions and LIME, localisation and faithfulness per method"))
