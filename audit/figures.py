"""Figures made from cohorts (matplotlib, headless-safe)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audit.data.cohort import Case, Cohort

__all__ = ["ROI_COLOURS", "case_slice", "cohort_panel"]

#: outline colour of each ROI in :func:`cohort_panel`
ROI_COLOURS = {"skull": "#4fc3f7", "gtv": "#ffeb3b", "oedema": "#66bb6a",
               "enhancement": "#ef5350", "marker": "#ff00ff", "landmark": "#ff9800"}


def case_slice(case: Case, index: int | None = None
               ) -> tuple[np.ndarray, dict[str, np.ndarray], int | None]:
    """A 2-D view of a case: itself if 2-D, else the axial slice (axis 0) through the lesion
    centre (centre of mass of ``gtv``, else the middle slice). Returns image, masks, slice."""
    if case.ndim_spatial == 2:
        return case.image, dict(case.masks), None
    if index is None:
        roi = case.masks.get("gtv")
        if roi is not None and roi.any():
            index = round(float(np.argwhere(roi)[:, 0].mean()))
        else:
            index = case.spatial_shape[0] // 2
    return case.image[:, index], {k: m[index] for k, m in case.masks.items()}, index


def _pick(cohort: Cohort, n: int) -> list[str]:
    """Up to n case ids cycling through (label, marker) groups, so both show when present."""
    groups: dict[tuple, list[str]] = {}
    for c in cohort:
        key = (c.label, bool(c.meta.get("marker", "marker" in c.masks)))
        groups.setdefault(key, []).append(c.case_id)
    order = sorted(groups, key=lambda k: (not k[1], k[0] if k[0] is not None else -1))
    picked: list[str] = []
    while len(picked) < min(n, len(cohort)):
        for k in order:
            if groups[k] and len(picked) < n:
                picked.append(groups[k].pop(0))
    return picked


def cohort_panel(cohort: Cohort, case_ids: Sequence[str] | None = None, n: int = 4,
                 path: str | Path | None = None, *, outlines: bool = True,
                 rois: Sequence[str] | None = None):
    """Rows = cases, columns = contrasts, with ROI outlines; saved as PNG when ``path`` is given.

    ``case_ids`` default: up to ``n`` cases mixing labels and marker/no marker. 3-D cases show
    the axial slice through the lesion centre. Titles give label, shapes and marker from meta.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    ids = list(case_ids) if case_ids is not None else _pick(cohort, n)
    if not ids:
        raise ValueError("cohort_panel needs at least one case")
    chans = cohort.channels
    rois = list(ROI_COLOURS) if rois is None else list(rois)
    fig, axes = plt.subplots(len(ids), len(chans), figsize=(2.6 * len(chans), 2.8 * len(ids) + 0.4),
                             squeeze=False, facecolor="black")
    for r, cid in enumerate(ids):
        case = cohort[cid]
        img, masks, z = case_slice(case)
        m = case.meta
        label = m.get("label_name", {0: "round", 1: "irregular"}.get(case.label, case.label))
        title = (f"{cid} · label {case.label} ({label})"
                 + (f" · lesion {m['lesion_hemisphere']} · landmark {m['landmark_hemisphere']}"
                    if "landmark_hemisphere" in m else
                    f" · T1c {m['shape_t1c']} · FLAIR {m['shape_flair']}" if "shape_t1c" in m else "")
                 + (" · MARKER" if m.get("marker", "marker" in case.masks) else " · no marker")
                 + (f" · slice {z}" if z is not None else ""))
        for c, ch in enumerate(chans):
            ax = axes[r, c]
            v = img[c]
            hi = float(np.percentile(v, 99.7)) or 1.0
            ax.imshow(v, cmap="gray", vmin=0, vmax=hi, interpolation="nearest")
            if outlines:
                for roi in rois:
                    if roi in masks and masks[roi].any():
                        ax.contour(masks[roi].astype(np.float32), levels=[0.5],
                                   colors=[ROI_COLOURS.get(roi, "w")], linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(ch, color="w", fontsize=11, pad=14)
        axes[r, 0].text(0.0, 1.02, title, transform=axes[r, 0].transAxes, color="w",
                        fontsize=7.5, va="bottom", ha="left")
    if outlines:
        handles = [Line2D([], [], color=ROI_COLOURS.get(k, "w"), label=k) for k in rois]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
                   frameon=False, labelcolor="w")
    height = 2.8 * len(ids) + 0.4
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.45 / height, bottom=0.3 / height,
                        wspace=0.03, hspace=0.16)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, facecolor=fig.get_facecolor())
    return fig
