"""2-D image files (PNG, JPEG, BMP, TIFF, ...) read with Pillow as a :class:`Cohort`.

Two layouts, one reader, :func:`read_images`:

* a manifest CSV with one row per image (paths relative to the CSV's folder), optional label,
  patient id and ``mask_<roi>`` columns; every other column becomes case meta;
* a folder with one subfolder per class, the layout of ``torchvision.datasets.ImageFolder``:
  classes are the sorted subfolder names and images are found recursively in the same order,
  so a model trained with ImageFolder gets the class indices it was trained with.

Pixels are the stored values as float32 ``C×H×W`` (0–255 for 8-bit, 0–65535 for 16-bit), with
no scaling: intensity normalisation belongs to :mod:`audit.run.preprocess`. EXIF orientation
is not applied (as in Pillow's and torchvision's loaders).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from audit.data.cohort import Case, Cohort, ManifestError, close_hint
from audit.data.nifti import CELL_PARSERS, infer_column_kind
from audit.data.prefetch import prefetch
from probes.core.errors import AuditInputError, OptionError, ShapeError

__all__ = ["IMAGE_SUFFIXES", "read_images"]

# torchvision.datasets.folder.IMG_EXTENSIONS, so both readers find the same files
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ImageMode = Literal["auto", "L", "RGB"]
# Pillow modes read as one grey channel; every other mode (P, RGB, RGBA, CMYK, YCbCr...) is colour
_GRAY = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _decode(path: Path, mode: str, fail: Any) -> np.ndarray:
    """Decode one image to float32 ``C×H×W`` under ``mode`` (see :func:`read_images`)."""
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise fail(f"{path} has {im.n_frames} frames; only single-frame images are read")
            im.load()
            if im.mode in _GRAY:
                # 1-bit → 0/255 and grey+alpha → grey, as Pillow's own convert("L") does
                g = np.asarray(im.convert("L") if im.mode in ("1", "LA", "La") else im)
                arr = g[None] if mode != "RGB" else np.repeat(g[None], 3, axis=0)
            else:
                rgb = im.convert("RGB")  # alpha is dropped, palettes are expanded
                # forced grey is Pillow's ITU-R 601-2 luma, what torchvision's Grayscale gives
                arr = np.asarray(rgb.convert("L"))[None] if mode == "L" else \
                    np.moveaxis(np.asarray(rgb), -1, 0)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        if isinstance(err, AuditInputError):
            raise
        raise fail(f"cannot read image {path}: {type(err).__name__}: {err}") from None
    return np.ascontiguousarray(arr, dtype=np.float32)


def _decode_mask(path: Path, name: str, shape: tuple[int, ...], fail: Any) -> np.ndarray:
    """A binary mask image (exactly two values, e.g. 0/1 or 0/255) → bool ``H×W``."""
    arr = _decode(path, "auto", fail)
    if arr.shape[0] == 3:
        if not (arr == arr[:1]).all():
            raise fail(f"mask {name!r} ({path}) is a colour image with differing R, G, B values; "
                       "save masks as single-channel images")
        arr = arr[:1]
    arr = arr[0]
    if arr.shape != shape:
        raise fail(f"mask {name!r} ({path}) has size {arr.shape} but its image has {shape}")
    values = np.unique(arr)
    # lossy (JPEG) masks have in-between values; thresholding them would move the ROI silently
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        raise fail(f"mask {name!r} ({path}) must be binary (0 and one other value), found "
                   f"{len(values)} values, e.g. {values[:6].tolist()}")
    return arr > 0


def _channel_names(n: int, channels: Sequence[str] | None) -> tuple[str, ...]:
    """Default names ``gray`` / ``R, G, B``, or the caller's, checked against the count."""
    if channels is None:
        return ("gray",) if n == 1 else ("R", "G", "B")
    names = (channels,) if isinstance(channels, str) else tuple(channels)
    if len(names) != n:
        raise ShapeError("channels", f"{names} ({len(names)} names)", f"{n} name(s)",
                         message=f"channels: got {len(names)} name(s) {names} but the images have {n} "
                                 "channel(s); pass mode='L' or mode='RGB' to force a channel count")
    return names


def _label_index(text: str, class_names: list[str] | None, where: str, fail: Any) -> int | None:
    """A label cell: empty → None, a class name → its index, else an integer index."""
    if text == "":
        return None
    if class_names is not None and text in class_names:
        return class_names.index(text)
    if text.lstrip("+-").isdigit():
        idx = int(text)
        if class_names is not None and not 0 <= idx < len(class_names):
            raise fail(f"{where}: label {idx} is out of range for {len(class_names)} classes {class_names}")
        return idx
    known = class_names or []
    raise fail(f"{where}: unknown label name {text!r}; known class names: {known}{close_hint(text, known)}")


def _rows_from_manifest(csv_path: Path, class_names: list[str] | None, cols: dict[str, str],
                        mask_prefix: str) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Parse the manifest into per-case rows (paths resolved, labels as indices) and class names."""
    if not csv_path.is_file():
        raise ManifestError(f"manifest not found: {csv_path}", str(csv_path), "a CSV file", name="manifest")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False)
    except (UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise ManifestError(f"{csv_path}: cannot read the manifest as a CSV table: {type(err).__name__}: "
                            f"{err}", str(csv_path), "a CSV table", name="manifest") from err
    names = list(df.columns)
    present = {}
    for key, col in cols.items():
        # a column left at its default name is optional; one the caller named must exist
        if col not in names and (key == "path" or col != key):
            raise ManifestError(f"{csv_path}: no column {col!r} ({key}_col); available columns: {names}"
                                f"{close_hint(col, names)}", col, f"a column {col!r}", name="manifest")
        present[key] = col if col in names else None
    mask_cols = [c for c in names if c.startswith(mask_prefix) and len(c) > len(mask_prefix)]
    meta_cols = [c for c in names if c not in present.values() and c not in mask_cols]
    if "path" in meta_cols:
        raise ManifestError(f"{csv_path}: column 'path' would collide with the image path kept in case "
                            "meta['path']; rename it", "path", "no column 'path' besides path_col", name="manifest")
    kinds = {c: infer_column_kind(df[c]) for c in meta_cols}
    lab_col = present["label"]
    if class_names is None and lab_col is not None:
        text = [v for v in df[lab_col] if v != ""]
        named = sorted({v for v in text if not v.lstrip("+-").isdigit()})
        if named and len(named) < len(set(text)):
            raise ManifestError(f"{csv_path}: column {lab_col!r} mixes class names {named[:5]} and integer "
                                "labels; pass class_names to say which index each name has",
                                lab_col, "all names or all integers", name="manifest")
        class_names = named or None  # names sort into class order, as folder names do
    rows = []
    for i, row in df.iterrows():
        line = int(i) + 2  # line 1 is the header
        if row[cols["path"]] == "":
            raise ManifestError(f"{csv_path}: line {line}: empty {cols['path']!r} cell", cols["path"], "a path",
                            name="manifest")
        cid = row[present["case_id"]] if present["case_id"] else ""
        cid = cid or Path(row[cols["path"]]).with_suffix("").as_posix()
        where = f"{csv_path}: line {line} (case {cid!r})"

        def fail(msg: str, col: str = cols["path"], where: str = where) -> ManifestError:
            return ManifestError(f"{where}: {msg}", col, "a readable image file", name="manifest")

        files = {}
        for col in [cols["path"]] + mask_cols:
            if row[col] == "":
                continue
            p = Path(row[col])
            p = p if p.is_absolute() else csv_path.parent / p
            if not p.is_file():
                raise fail(f"column {col!r}: file not found: {p}", col)
            files[col] = p
        meta = {}
        for c in meta_cols:
            if row[c] != "":
                try:
                    meta[c] = CELL_PARSERS[kinds[c]](row[c])
                except (ValueError, KeyError):
                    raise fail(f"column {c!r} value {row[c]!r} is not a {kinds[c]}", c) from None
        rows.append({"case_id": cid, "path": files.pop(cols["path"]), "fail": fail, "meta": meta,
                     "label": None if lab_col is None else _label_index(row[lab_col], class_names, where,
                                                                        lambda m: ManifestError(m, lab_col, name="manifest")),
                     "patient_id": (row[present["patient_id"]] if present["patient_id"] else "") or None,
                     "masks": {c[len(mask_prefix):]: p for c, p in files.items()}})
    return rows, class_names


def _rows_from_folder(folder: Path, class_names: list[str] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per image under ``folder/<class>/...``, in torchvision ImageFolder's order."""
    def fail(msg: str) -> AuditInputError:
        return AuditInputError("folder", str(folder), "one subfolder of images per class", message=f"folder: {msg}")

    if not folder.is_dir():
        raise fail(f"not a directory: {folder}")
    # hidden folders (.ipynb_checkpoints, .git) are not classes: they would shift every index
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    loose = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))
    if loose:
        raise fail(f"{len(loose)} image(s) lie directly in {folder} (e.g. {loose[:3]}); put each image "
                   "in the subfolder of its class")
    if class_names is None:
        class_names = found
    unknown = [f for f in found if f not in class_names]
    if unknown:
        raise fail(f"subfolder {unknown[0]!r} of {folder} is not a class; known class names: {class_names}"
                   f"{close_hint(unknown[0], class_names)}")
    rows, used = [], []
    for cls in sorted(found):
        n0 = len(rows)
        for root, _, fnames in sorted(os.walk(folder / cls, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMAGE_SUFFIXES) and not fname.startswith("."):
                    p = Path(root) / fname
                    cid = p.relative_to(folder).with_suffix("").as_posix()
                    rows.append({"case_id": cid, "path": p, "label": class_names.index(cls), "meta": {},
                                 "patient_id": None, "masks": {}, "fail": lambda m, cid=cid: fail(f"case {cid!r}: {m}")})
        if len(rows) == n0:
            raise fail(f"class subfolder {cls!r} holds no image (suffixes {', '.join(IMAGE_SUFFIXES)})")
        used.append(cls)
    if len(used) < 2:
        raise fail(f"{folder} holds images of {len(used)} class(es) {used}; a classification cohort needs "
                   "at least two class subfolders")
    return rows, class_names


def read_images(manifest: str | Path | None = None, folder: str | Path | None = None, *,
                mode: ImageMode = "auto", channels: Sequence[str] | None = None,
                class_names: Sequence[str] | None = None, case_id_col: str = "case_id", path_col: str = "path",
                label_col: str = "label", patient_id_col: str = "patient_id", mask_prefix: str = "mask_",
                num_workers: int = 0) -> Cohort:
    """Read 2-D image files as a Cohort from a manifest CSV or a one-folder-per-class layout.

    Give exactly one of ``manifest`` or ``folder``.

    Manifest: ``path_col`` holds image paths (absolute or relative to the CSV's folder);
    ``case_id_col`` (default: the path without suffix), ``label_col`` (an integer index or a
    class name; empty = unlabelled) and ``patient_id_col`` (default: the case id) are optional
    while left at their default names; ``<mask_prefix><roi>`` columns point to binary mask
    images (two values, e.g. 0/255; empty cell = no such mask); every other column goes to case
    meta, typed as int, float, bool or str (so a ``split`` column becomes ``meta["split"]``).
    Without ``class_names``, label names are sorted into class order, as folder names are.

    Folder: ``folder/<class>/**/<image>`` with the suffixes of ``IMAGE_SUFFIXES``; classes are
    the sorted non-hidden subfolders (or ``class_names``, which may list classes with no
    folder); case id = the path relative to ``folder`` without suffix (``glioma/img01``);
    order and class indices are those of ``torchvision.datasets.ImageFolder``.

    ``mode``: ``"auto"`` keeps grey images (8/16/32-bit, 1-bit as 0/255) as one channel
    ``"gray"`` and makes colour images (RGB, RGBA with alpha dropped, palette) three channels
    ``"R", "G", "B"``; ``"L"`` forces grey (colour via Pillow's luma ``L = 0.299 R + 0.587 G +
    0.114 B``, rounded), ``"RGB"`` forces three channels (grey repeated). ``channels`` renames
    the channels (same count). Images may differ in size; resizing is preprocessing's job.
    ``num_workers``: threads decoding the files (0: in the loop; same cohort and errors either
    way, ``audit.data.prefetch``).

    Returns a Cohort with ``meta = {"source": "images", "class_names": [...] or None}`` (None
    for integer labels without names); each case's meta holds ``"path"`` (absolute) and the
    manifest's extra columns.

    Raises:
        ManifestError: a manifest problem (missing file or column, unknown label name,
            unreadable or non-binary image), naming the line, case and path.
        AuditInputError: a folder problem (no images, one class, a stray subfolder), naming it.
        OptionError / ShapeError: a bad ``mode`` / a ``channels`` count that does not match.
    """
    if (manifest is None) == (folder is None):
        raise OptionError("manifest", f"manifest={manifest!r}, folder={folder!r}", "exactly one of manifest or folder",
                          message="manifest/folder: give exactly one of manifest (a CSV) or folder (one subfolder "
                                  f"per class), got manifest={manifest!r}, folder={folder!r}")
    if mode not in ("auto", "L", "RGB"):
        raise OptionError("mode", repr(mode), "'auto', 'L' or 'RGB'")
    names = None if class_names is None else [str(c) for c in class_names]
    if names is not None and (len(set(names)) != len(names) or not names):
        raise OptionError("class_names", names, "distinct names, at least one")
    if manifest is not None:
        cols = {"path": path_col, "case_id": case_id_col, "label": label_col, "patient_id": patient_id_col}
        rows, names = _rows_from_manifest(Path(manifest), names, cols, mask_prefix)
    else:
        rows, names = _rows_from_folder(Path(folder), names)
    cases: list[Case] = []
    seen: dict[str, Path] = {}

    def decode(r: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        image = _decode(r["path"], mode, r["fail"])
        return image, {m: _decode_mask(p, m, image.shape[1:], r["fail"]) for m, p in r["masks"].items()}

    with prefetch([functools.partial(decode, r) for r in rows], num_workers) as decoded:
        for r, get in zip(rows, decoded):
            fail = r["fail"]
            if r["case_id"] in seen:
                raise fail(f"duplicate case id {r['case_id']!r} ({r['path']} and {seen[r['case_id']]})")
            seen[r["case_id"]] = r["path"]
            image, masks = get()
            cases.append(_case(r, image, masks, channels, cases))
    return Cohort(cases, {"source": "images", "class_names": names})


def _case(r: dict[str, Any], image: np.ndarray, masks: dict[str, np.ndarray], channels: Sequence[str] | None,
          cases: list[Case]) -> Case:
    """One decoded row as a Case; its channels must match those of the cases before it."""
    fail = r["fail"]
    chans = _channel_names(image.shape[0], channels)
    if cases and chans != cases[0].channels:
        raise fail(f"{r['path']} has {len(chans)} channel(s) {chans} but {cases[0].meta['path']} has "
                   f"{cases[0].channels}; mode='auto' mixes grey and colour images: pass mode='L' or mode='RGB'")
    return Case(r["case_id"], image, chans, r["label"], r["patient_id"], masks,
                {"path": str(r["path"].resolve()), **r["meta"]})
