"""Image panels of the report: saliency maps of the shown cases and the layer-wise Grad-CAM strip.

They read what the run stored for the cases the report shows (``maps/cases/inputs.npz``: images,
ROI masks, ids, labels; ``maps/<instrument>/<name>.npz`` with ``<name>_cases.npz``: the maps and
their case indices) and the ``predictions`` table for each case's outcome. A 3D case is drawn as
slices through the centre of its target ROI, the plane and index stated on the panel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from audit.report.plots import colour
from audit.report.tables import RunTables

__all__ = ["PLANES", "ShownCase", "gradcam_strip", "saliency_panel", "shown_cases", "shown_maps", "slice_note"]

# a 3D case is cut across its first array axis, the cohort's axial axis (as audit.figures.case_slice)
PLANES = ("axial",)


@dataclass
class ShownCase:
    """One shown case: its index in the audited cohort, id, label, outcome and arrays."""

    index: int
    case_id: str
    label: int
    outcome: str
    p_target: float
    image: np.ndarray  # (C, *spatial) float32
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def _text(s: object) -> str:
    """Text for matplotlib: ``$`` would start mathtext."""
    return str(s).replace("$", r"\$")


def shown_cases(t: RunTables) -> tuple[list[ShownCase], list[str]]:
    """The shown cases (ordered TN, FN, TP, FP, then the others) and the channel names; empty when
    the run kept no maps."""
    path = t.out / "maps" / "cases" / "inputs.npz"
    if not path.is_file():
        return [], []
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    pred = t["predictions.cases"]
    outcome, p_target = {}, {}
    if not pred.empty and "label" in pred:
        a = pred[pred["set"] == "audit"]
        wide = a.pivot_table(index="case_id", columns="metric", values="value")
        lab = a.drop_duplicates("case_id").set_index("case_id")["label"]
        for cid in wide.index:
            if "predicted" not in wide:
                break
            pos, hit = int(lab[cid]) == t.target, int(wide.loc[cid, "predicted"]) == t.target
            outcome[cid] = ("T" if pos == hit else "F") + ("P" if hit else "N")
            p_target[cid] = float(wide.loc[cid].get("p_target", math.nan))
    cases = []
    for j, (i, cid) in enumerate(zip(data["index"], data["case_ids"])):
        cid = str(cid)
        cases.append(ShownCase(int(i), cid, int(data["labels"][j]), outcome.get(cid, ""), p_target.get(cid, math.nan),
                               data["images"][j].astype(np.float32),
                               {str(r): data[f"mask_{r}"][j] for r in data["rois"] if f"mask_{r}" in data}))
    order = {"TN": 0, "FN": 1, "TP": 2, "FP": 3}
    cases.sort(key=lambda c: (order.get(c.outcome, 9), c.index))
    return cases, [str(c) for c in data["channels"]]


def shown_maps(t: RunTables) -> dict[str, dict[int, np.ndarray]]:
    """Stored maps by method (Grad-CAM per layer as ``gradcam:<point>``), then by case index;
    each map ``(channels, *spatial)``."""
    out: dict[str, dict[int, np.ndarray]] = {}
    root = t.out / "maps"
    points = list(dict.fromkeys(t["gradcam.resolution"].get("point", [])))

    def load(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        cases = path.with_name(path.stem + "_cases.npz")
        if not (path.is_file() and cases.is_file()):
            return None
        with np.load(path) as z, np.load(cases) as c:
            return z["maps"].astype(np.float32), c["maps"]

    got = load(root / "gradcam" / "maps.npz")
    if got is not None:
        maps, idx = got
        for k, pt in enumerate(points[: maps.shape[1]]):
            out[f"gradcam:{pt}"] = {int(i): maps[j, k] for j, i in enumerate(idx)}
    got = load(root / "lrp" / "maps.npz")
    if got is not None:
        out["lrp"] = {int(i): m for i, m in zip(got[1], got[0])}
    for path in sorted((root / "attribution").glob("maps_*.npz")):
        if path.stem.endswith("_cases"):
            continue
        got = load(path)
        if got is not None:
            out[path.stem.removeprefix("maps_")] = {int(i): m for i, m in zip(got[1], got[0])}
    return out


def _centre(case: ShownCase, rois: tuple[str, ...]) -> tuple[int, str]:
    """Slice index along the first (axial) axis through the centre of the first non-empty ROI of ``rois``."""
    for r in rois:
        m = case.masks.get(r)
        if m is not None and m.any():
            return round(float(np.argwhere(m)[:, 0].mean())), r
    return case.image.shape[1] // 2, "the volume"


def _plane(a: np.ndarray, k: int | None) -> np.ndarray:
    return a if k is None else a[k]


def _norm(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, (1, 99)) if a.size else (0, 1)
    return np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)


def _heat(m: np.ndarray) -> np.ndarray:
    """A map scaled to [−1, 1] by its largest absolute value (signed maps keep their sign)."""
    s = float(np.abs(m).max()) if m.size else 0.0
    return m / s if s > 0 else m


def _outlines(masks: dict[str, np.ndarray], shape: tuple[int, ...], rois: list[str]) -> np.ndarray:
    """RGBA image of each ROI's one-pixel outline in its colour (cheaper than a contour per ROI)."""
    from matplotlib.colors import to_rgba
    from scipy.ndimage import binary_erosion

    out = np.zeros((*shape, 4), np.float32)
    for r, m in masks.items():
        if m.shape == shape and m.any():
            edge = m & ~binary_erosion(m)
            out[edge] = to_rgba(colour(r, rois))
    return out


def _show(ax, img: np.ndarray, heat: np.ndarray | None = None, masks: dict | None = None, rois: list | None = None,
          title: str = "") -> None:
    ax.imshow(_norm(img), cmap="gray", interpolation="nearest")
    if heat is not None:
        h = _heat(heat)
        signed = float(h.min()) < -1e-6
        ax.imshow(h, cmap="bwr" if signed else "inferno", vmin=-1 if signed else 0, vmax=1, alpha=0.55,
                  interpolation="bilinear")
    if masks:
        ax.imshow(_outlines(masks, img.shape, rois or []), interpolation="nearest")
    ax.set_title(_text(title), fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def slice_note(case: ShownCase, target_rois: tuple[str, ...]) -> str:
    """Which slice a 3D case is drawn at ("" for a 2D case)."""
    if case.image.ndim != 4:
        return ""
    k, where = _centre(case, target_rois)
    return f"{PLANES[0]} slice {k} of {case.image.shape[1]} (first array axis) through the centre of {where}"


def saliency_panel(case: ShownCase, channels: list[str], maps: dict[str, dict[int, np.ndarray]],
                   class_names: list[str], target_rois: tuple[str, ...], ignore_rois: tuple[str, ...],
                   gradcam: str | None = None) -> Figure:
    """One case: each contrast with the ROI outlines; per-contrast LRP (or the first per-contrast
    method) over each contrast; then each method's map (summed over contrasts) side by side,
    Grad-CAM at layer ``gradcam`` (default: the deepest). 3D: the slice through the target ROI's centre."""
    three_d = case.image.ndim == 4
    k = _centre(case, target_rois)[0] if three_d else None
    rois = sorted(r for r in case.masks if r not in ignore_rois)
    outlines = {r: _plane(case.masks[r], k) for r in rois}
    per_contrast = next((m for m in ("lrp", *sorted(maps)) if not m.startswith("gradcam")
                         and case.index in maps.get(m, {}) and maps[m][case.index].shape[0] == len(channels)), None)
    gradcams = [m for m in maps if m.startswith("gradcam:") and case.index in maps[m]]
    pick = f"gradcam:{gradcam}" if f"gradcam:{gradcam}" in gradcams else (gradcams[-1] if gradcams else None)
    methods = ([pick] if pick else []) + [m for m in sorted(maps) if not m.startswith("gradcam")]
    cols = max(len(channels), len(methods), 1)
    rows = 1 + (per_contrast is not None) + bool(methods)
    fig = Figure(figsize=(1.9 * cols, 2.0 * rows + 0.8))
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for j, ch in enumerate(channels):
        axes[0, j].set_axis_on()
        _show(axes[0, j], _plane(case.image[j], k), masks=outlines, rois=rois, title=ch)
    r = 1
    if per_contrast is not None:
        m = maps[per_contrast][case.index]
        for j, ch in enumerate(channels):
            axes[r, j].set_axis_on()
            _show(axes[r, j], _plane(case.image[j], k), _plane(m[j], k), title=f"{per_contrast} on {ch}")
        r += 1
    background = case.image.mean(0)
    for j, name in enumerate(methods):
        axes[r, j].set_axis_on()
        if case.index in maps[name]:
            label = f"Grad-CAM {name.split(':', 1)[1].removesuffix('.resid')}" if name.startswith("gradcam:") else name
            _show(axes[r, j], _plane(background, k), _plane(maps[name][case.index].sum(0), k), masks=outlines,
                  rois=rois, title=label)
        else:
            _show(axes[r, j], _plane(background, k), title=f"{name}: not computed for this case")
    cls = class_names[case.label] if 0 <= case.label < len(class_names) else str(case.label)
    head = f"{case.case_id} — {case.outcome or 'case'}, true class {cls}"
    if math.isfinite(case.p_target):
        head += f", p(target) = {case.p_target:.2f}"
    if three_d:
        head += f"; {slice_note(case, target_rois)}"
    fig.suptitle(_text(head), fontsize=8)
    from matplotlib.patches import Patch

    shown = [r for r in rois if outlines[r].any()]
    fig.legend(handles=[Patch(color=colour(r, rois), label=_text(r)) for r in shown], loc="lower center",
               ncol=max(1, len(shown)), fontsize=7, frameon=False, title="outlines", title_fontsize=7)
    # a fixed grid (tight_layout would measure every image axis): titles above each image, legend below
    h = fig.get_figheight()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.45 / h, top=1 - 0.45 / h, wspace=0.05, hspace=0.18)
    return fig


def gradcam_strip(case: ShownCase, maps: dict[str, dict[int, np.ndarray]], cells: dict[str, int],
                  target_rois: tuple[str, ...]) -> Figure | None:
    """Grad-CAM of one case at every layer, left (input side) to right, with each map's grid size."""
    layers = [m for m in maps if m.startswith("gradcam:") and case.index in maps[m]]
    if not layers:
        return None
    k = _centre(case, target_rois)[0] if case.image.ndim == 4 else None
    fig = Figure(figsize=(1.5 * len(layers), 1.9))
    axes = np.atleast_1d(fig.subplots(1, len(layers), squeeze=False)[0])
    background = case.image.mean(0)
    for ax, name in zip(axes, layers):
        pt = name.split(":", 1)[1]
        _show(ax, _plane(background, k), _plane(maps[name][case.index][0], k),
              title=f"{pt.removesuffix('.resid')} ({cells.get(pt, '?')} cells)")
    fig.suptitle(_text(f"Grad-CAM per layer, case {case.case_id}"), fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.72, wspace=0.06)
    return fig
