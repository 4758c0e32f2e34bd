"""NIfTI cohorts on disk: one file per contrast and per mask, plus a manifest CSV.

Axis convention (see ``audit.data``): NIfTI voxel axes ``(i, j, k)`` hold medaudit's
``(H, W, D)``, so ``nifti[i, j, k] == image[c, k, i, j]``; a 2-D case is an ``H×W×1`` volume.
"""

from __future__ import annotations

import csv
import functools
import json
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.data.cohort import BAD_NAME, COHORT_FORMAT, Case, Cohort, ManifestError, close_hint
from audit.data.prefetch import prefetch
from probes.core.errors import InputTypeError, OptionError

__all__ = ["write_nifti", "read_manifest"]


def _to_nifti(arr: np.ndarray) -> np.ndarray:
    """medaudit spatial (D,H,W)/(H,W) → NIfTI (i,j,k) = (H,W,D)/(H,W,1)."""
    return arr[:, :, None] if arr.ndim == 2 else np.moveaxis(arr, 0, -1)


def _cell(v: Any) -> tuple[str, str] | None:
    """(type, CSV text) of a scalar meta value; None for values a CSV cell cannot hold."""
    if v is None:
        return "none", ""
    if isinstance(v, (bool, np.bool_)):
        return "bool", str(bool(v))
    if isinstance(v, (numbers.Integral, np.integer)):
        return "int", str(int(v))
    if isinstance(v, (numbers.Real, np.floating)):
        return "float", repr(float(v))  # the shortest repr round-trips exactly
    return ("str", v) if isinstance(v, str) else None


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.generic, np.ndarray)):
        return v.tolist()
    raise TypeError(f"value of type {type(v).__name__} is not JSON-serialisable")


def _check_name(kind: str, name: str) -> None:
    """Names become file names and CSV columns: refuse separators and hidden-file prefixes."""
    if BAD_NAME.search(name) or name.startswith(".") or name != name.strip():
        raise ValueError(f"{kind} {name!r} cannot be used in a file name (no path separators, "
                         r'\ / : * ? " < > |, control characters, leading dot or spaces)')


def write_nifti(cohort: Cohort, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write a cohort as NIfTI files, ``manifest.csv`` and ``cohort_meta.json``; return the CSV.

    Files: ``<case_id>_<channel>.nii.gz`` (float32) and ``<case_id>_mask-<name>.nii.gz``
    (uint8), in the module's axis convention. Manifest columns: case_id, patient_id, label,
    ``image_<channel>``..., ``mask_<name>``... (paths relative to the manifest; empty where a
    case lacks the mask), then one column per scalar meta key (bool/int/float/str; None and ""
    become empty cells, read back as absent). ``meta["affine"]`` goes into the headers; other
    non-scalar meta is skipped with a warning. ``cohort_meta.json`` holds the cohort meta (as
    JSON: tuples and numpy arrays come back as lists), the spatial dimensionality and the
    meta column types, so that :func:`read_manifest` restores everything exactly.
    """
    import nibabel as nib

    if not isinstance(cohort, Cohort):
        raise InputTypeError("cohort", type(cohort).__name__, "a Cohort",
                             message=f"cohort must be a Cohort, got {type(cohort).__name__}")
    folder, n_ch = Path(folder), len(cohort.channels)
    manifest = folder / "manifest.csv"
    if manifest.exists() and not overwrite:
        raise FileExistsError(f"{manifest} exists; pass overwrite=True to replace it")
    if not len(cohort):
        raise OptionError("cohort", "an empty cohort", "at least one case",
                          message="cannot write an empty cohort: its channels and dimensionality are unknown")
    mask_names = list(dict.fromkeys(m for c in cohort for m in c.masks))
    reserved = {"case_id", "patient_id", "label"}
    kinds: dict[str, set[str]] = {}
    skipped: set[str] = set()
    files: dict[str, str] = {}  # lower-cased name → name: case-folding file systems collide
    affines: dict[str, np.ndarray] = {}
    for ch in cohort.channels:
        _check_name("channel", ch)
    for c in cohort:
        _check_name("case_id", c.case_id)
        for m in c.masks:
            _check_name("mask name", m)
        for f in [f"{c.case_id}_{ch}.nii.gz" for ch in c.channels] + \
                [f"{c.case_id}_mask-{m}.nii.gz" for m in c.masks]:
            if f.lower() in files:
                raise ValueError(f"case {c.case_id!r}: file name {f!r} collides with "
                                 f"{files[f.lower()]!r}; rename a case, channel or mask")
            files[f.lower()] = f
        affines[c.case_id] = np.asarray(c.meta.get("affine", np.eye(4)), dtype=float)
        if affines[c.case_id].shape != (4, 4) or not np.isfinite(affines[c.case_id]).all():
            raise ValueError(f"case {c.case_id!r}: meta['affine'] must be a finite 4×4 matrix, "
                             f"got shape {affines[c.case_id].shape}")
        for k, v in c.meta.items():
            if k in reserved or k.startswith(("image_", "mask_")):
                raise ValueError(f"case {c.case_id!r}: meta key {k!r} collides with a manifest "
                                 "column name (case_id, patient_id, label, image_*, mask_*)")
            cell = _cell(v) if k != "affine" else None  # the affine travels in the headers
            if cell is None and k != "affine":
                skipped.add(k)
            elif cell is not None:
                kinds.setdefault(k, set()).add(cell[0])
    meta_cols = [k for k in kinds if k not in skipped]
    if skipped:
        warnings.warn(f"non-scalar meta key(s) {sorted(skipped)} are not written to the manifest",
                      stacklevel=2)
    col_types = {}
    for k in meta_cols:
        real = kinds[k] - {"none"}
        col_types[k] = real.pop() if len(real) == 1 else ("str" if not real else "auto")
    for k, v in cohort.meta.items():  # fail before writing anything, naming the key
        try:
            json.dumps(v, default=_json_default)
        except (TypeError, ValueError) as err:
            raise TypeError(f"cohort meta key(s) [{k!r}] cannot be written to JSON: {err}") from err

    folder.mkdir(parents=True, exist_ok=True)
    rows = [["case_id", "patient_id", "label"] + [f"image_{ch}" for ch in cohort.channels]
            + [f"mask_{m}" for m in mask_names] + meta_cols]
    for c in cohort:
        arrays = [(f"{c.case_id}_{ch}.nii.gz", c.image[i]) for i, ch in enumerate(c.channels)]
        arrays += [(f"{c.case_id}_mask-{m}.nii.gz" if m in c.masks else "", c.masks.get(m))
                   for m in mask_names]
        for n, (fname, arr) in enumerate(arrays):
            if fname:
                img = nib.Nifti1Image(_to_nifti(arr if n < n_ch else arr.astype(np.uint8)),
                                      affines[c.case_id])
                img.header.set_data_dtype(np.float32 if n < n_ch else np.uint8)
                nib.save(img, folder / fname)
        rows.append([c.case_id, c.patient_id, "" if c.label is None else str(c.label)]
                    + [f for f, _ in arrays] + [_cell(c.meta.get(k))[1] for k in meta_cols])
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    side = {"format": COHORT_FORMAT, "spatial_ndim": cohort.spatial_ndim,
            "channels": list(cohort.channels), "meta_columns": col_types,
            "cohort_meta": cohort.meta}
    (folder / "cohort_meta.json").write_text(
        json.dumps(side, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return manifest


# manifest cell text → value, by column kind (shared by the NIfTI and the image manifests)
CELL_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int, "float": float, "str": str,
    "bool": lambda t: {"true": True, "false": False, "1": True, "0": False}[t.lower()]}


def infer_column_kind(values: Iterable[str]) -> str:
    """Column type of a hand-written manifest: the narrowest of int, float, bool, str."""
    values = [v for v in values if v != ""]
    for kind in ("int", "float", "bool"):
        try:
            [CELL_PARSERS[kind](v) for v in values]
            return kind
        except (ValueError, KeyError):
            pass
    return "str"


def read_manifest(csv_path: str | Path, channels: Sequence[str] | None = None,
                  mask_names: Sequence[str] | None = None, dtype: Any = np.float32, *,
                  case_id_col: str = "case_id", patient_id_col: str | None = "patient_id",
                  label_col: str | None = "label", image_prefix: str = "image_",
                  mask_prefix: str = "mask_", meta_columns: Sequence[str] | None = None,
                  spatial_ndim: int | None = None, num_workers: int = 0) -> Cohort:
    """Read a Cohort from a manifest CSV of NIfTI paths (as written by :func:`write_nifti`).

    Paths are absolute or relative to the manifest's folder. ``channels``/``mask_names``
    default to every ``<image_prefix>*``/``<mask_prefix>*`` column; an empty mask cell means
    the case lacks that mask. ``patient_id_col=None`` makes patient = case; ``label_col=None``
    leaves labels None. ``meta_columns`` defaults to all remaining columns, typed by
    ``cohort_meta.json`` when present, else by the narrowest of int/float/bool/str per column.
    ``dtype`` (float32/float64) is the precision of nibabel's scaling step; images are stored
    as float32. ``spatial_ndim`` tells 2-D from one-slice 3-D for H×W×1 files; by default it
    comes from ``cohort_meta.json``, else a singleton k means 2-D. A non-identity affine goes
    to ``meta["affine"]``; contrasts or masks of a case with differing affines raise a warning.
    ``num_workers``: threads reading the files (0: in the loop; same cohort and errors either
    way, ``audit.data.prefetch``).
    """
    import nibabel as nib

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest not found: {csv_path}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise OptionError("dtype", message=f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False)
    except (UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise ManifestError(f"{csv_path}: cannot read the manifest as a CSV table: {type(err).__name__}: {err}",
                            str(csv_path), "a CSV table") from err
    cols = list(df.columns)

    def need(col: str, what: str) -> None:
        if col not in cols:
            raise ManifestError(f"{csv_path}: no column {col!r} ({what}); available columns: "
                                f"{cols}{close_hint(col, cols)}", col, f"a column {col!r}")

    need(case_id_col, "case ids")
    if patient_id_col is not None:
        need(patient_id_col, "patient ids; pass patient_id_col=None to use case ids")
    if label_col is not None:
        need(label_col, "labels; pass label_col=None for an unlabelled cohort")
    if channels is None:
        channels = [c[len(image_prefix):] for c in cols if c.startswith(image_prefix)]
    channels = [channels] if isinstance(channels, str) else list(channels)
    if mask_names is None:
        mask_names = [c[len(mask_prefix):] for c in cols if c.startswith(mask_prefix)]
    mask_names = [mask_names] if isinstance(mask_names, str) else list(mask_names)
    if not channels:
        raise ManifestError(f"{csv_path}: no image column (prefix {image_prefix!r}) to read; "
                            f"available columns: {cols}")
    file_cols = [image_prefix + ch for ch in channels] + [mask_prefix + m for m in mask_names]
    for n, (col, name) in enumerate(zip(file_cols, channels + mask_names)):
        need(col, f"image of channel {name!r}" if n < len(channels) else f"mask {name!r}")

    side: dict[str, Any] = {}
    cohort_meta: dict[str, Any] = {}
    if (csv_path.parent / "cohort_meta.json").is_file():
        sidecar = json.loads((csv_path.parent / "cohort_meta.json").read_text(encoding="utf-8"))
        if isinstance(sidecar, dict) and sidecar.get("format") == COHORT_FORMAT:
            side, cohort_meta = sidecar, dict(sidecar.get("cohort_meta") or {})
        elif isinstance(sidecar, dict):
            cohort_meta = sidecar  # a hand-written sidecar: the whole object is cohort meta
    nd = spatial_ndim if spatial_ndim is not None else side.get("spatial_ndim")
    if nd not in (None, 2, 3):
        raise ValueError(f"spatial_ndim must be 2, 3 or None, got {nd!r}")
    if meta_columns is None:
        meta_columns = [c for c in cols if c not in {case_id_col, patient_id_col, label_col}
                        and not c.startswith((image_prefix, mask_prefix))]
    for c in meta_columns:
        need(c, "meta")
    kinds = {c: side.get("meta_columns", {}).get(c, "auto") for c in meta_columns}
    kinds = {c: infer_column_kind(df[c]) if k == "auto" else k for c, k in kinds.items()}

    def load(text: str, col: str, line: int, cid: str, image: bool
             ) -> tuple[Path, np.ndarray, np.ndarray]:
        path = Path(text) if Path(text).is_absolute() else csv_path.parent / text
        if not path.is_file():
            raise FileNotFoundError(f"{csv_path}: line {line} (case {cid!r}), column {col!r}: "
                                    f"file not found: {path}")
        img = nib.load(str(path))
        data = img.get_fdata(dtype=dtype) if image else np.asarray(img.dataobj)
        while data.ndim > 3 and data.shape[-1] == 1:  # X×Y×Z×1 files from some converters
            data = data[..., 0]
        data = data[:, :, None] if data.ndim == 2 else data
        if data.ndim != 3:
            raise ValueError(f"case {cid!r}: {path} must be a 2-D or 3-D NIfTI (one contrast per "
                             f"file), got shape {data.shape}")
        return path, data, img.affine

    def load_row(i: int, row: pd.Series) -> dict[int, tuple[Path, np.ndarray, np.ndarray]]:
        """Every file of one row (the cells checked in the loop below, before this is read)."""
        return {n: load(row[col], col, i + 2, row[case_id_col], n < len(channels))
                for n, col in enumerate(file_cols) if row[col] != ""}

    rows = list(df.iterrows())
    cases = []
    with prefetch([functools.partial(load_row, int(i), row) for i, row in rows], num_workers) as files:
        for (i, row), get in zip(rows, files):
            case, nd = _manifest_case(csv_path, row, int(i) + 2, get, channels, mask_names, file_cols, nd,
                                      meta_columns, kinds, case_id_col, patient_id_col, label_col)
            cases.append(case)
    return Cohort(cases, cohort_meta)


def _manifest_case(csv_path: Path, row: pd.Series, line: int, get: Any, channels: list[str], mask_names: list[str],
                   file_cols: list[str], nd: int | None, meta_columns: Sequence[str], kinds: dict[str, str],
                   case_id_col: str, patient_id_col: str | None, label_col: str | None) -> tuple[Case, int]:
    """One manifest row as a Case: cells checked, then its files (``get()``) read and checked;
    with the cohort's spatial dimensionality (``nd``, from the first case when not known)."""
    cid = row[case_id_col]
    if cid == "":
        raise ManifestError(f"{csv_path}: line {line}: empty {case_id_col!r} cell", case_id_col, "a case id")
    for n, col in enumerate(file_cols):
        if row[col] == "" and n < len(channels):
            raise ManifestError(f"{csv_path}: line {line} (case {cid!r}): empty {col!r} cell", col, "a file path")
    loaded = get()
    p0, d0, a0 = loaded[0]
    nd = nd or (2 if d0.shape[2] == 1 else 3)
    for p, d, _ in loaded.values():
        if d.shape != d0.shape:
            raise ValueError(f"case {cid!r}: files disagree in shape: {p0} has {d0.shape} "
                             f"but {p} has {d.shape}")
        if nd == 2 and d.shape[2] != 1:
            raise ValueError(f"case {cid!r}: {p} has shape {d.shape}, not H×W×1, but the "
                             "cohort is 2-D (spatial_ndim=2)")
    off = [str(p) for p, _, a in loaded.values() if not np.allclose(a, a0, atol=1e-4)]
    if off:
        warnings.warn(f"case {cid!r}: affine of {off} differs from that of {p0}; the "
                      "contrasts/masks may not be co-registered", stacklevel=3)
    # back from NIfTI (H, W, D) to medaudit (D, H, W), or (H, W) for a 2-D cohort
    arrays = {n: d[:, :, 0] if nd == 2 else np.moveaxis(d, -1, 0)
              for n, (_, d, _) in loaded.items()}
    meta: dict[str, Any] = {}
    for c in meta_columns:
        try:
            meta.update({c: CELL_PARSERS[kinds[c]](row[c])} if row[c] != "" else {})
        except (ValueError, KeyError):
            raise ManifestError(f"{csv_path}: line {line} (case {cid!r}): column {c!r} "
                                f"value {row[c]!r} is not a {kinds[c]}", c, f"a {kinds[c]}") from None
    if not np.array_equal(a0, np.eye(4)):
        meta["affine"] = np.asarray(a0, dtype=float)
    label = "" if label_col is None else row[label_col]
    try:
        label = None if label == "" else \
            int(label) if label.lstrip("+-").isdigit() else float(label)  # Case checks 1.0
    except ValueError:
        raise ManifestError(f"{csv_path}: line {line} (case {cid!r}): label {label!r} is not "
                            "an integer", label_col, "an integer") from None
    pid = row[patient_id_col] if patient_id_col is not None and row[patient_id_col] else cid
    masks = {m: arrays[len(channels) + j] for j, m in enumerate(mask_names)
             if len(channels) + j in arrays}
    return Case(cid, np.stack([arrays[n] for n in range(len(channels))]), tuple(channels), label, pid, masks,
                meta), nd
