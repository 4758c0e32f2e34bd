"""Layer-wise linear probes on global-average-pooled activations, with an anti-leakage protocol.

``extract_features(model, loader, points)`` streams a loader through the model once and keeps,
per hook point, the global-average-pooled activation ``GAP(a)_c = mean_p a_{c,p}`` over all
spatial positions ``p`` (an ``(N, C)`` array per point), optionally cached on disk.

``fit_linear_probes(features, labels, groups)`` fits, per point, an L2 logistic regression
(``sklearn``) on standardised features, following the protocol of Alain & Bengio (2016,
"Understanding intermediate layers using linear classifier probes") with the controls of
Hewitt & Liang (2019, "Designing and interpreting probes with control tasks"):

* samples are split **by patient** (``groups``): no patient is in two splits (checked);
* the ``StandardScaler`` is fit on the training split only;
* the inverse regularisation ``C`` is chosen on the validation split only;
* the test split is scored once, with the chosen ``C``;
* a control task — labels permuted at the patient level *within each split* (seeded) — is
  fit with the same protocol beside each point, so probes that memorise show up as control
  AUCs above 0.5 (selectivity = real − control).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from probes.core.errors import InputTypeError, LabelError, NonFiniteError, OptionError, ShapeError, warn_undefined
from probes.core.model import model_device, model_state
from probes.core.result import Result, Summary, long_frame, render_summary, tidy
from probes.core.validate import as_case_ids, as_input, as_labels, check_choice, check_finite, shape_of
from probes.hooks.points import as_points
from probes.hooks.registry import HookRegistry
from probes.internals._common import registry_of
from probes.internals.splits import SPLITS, SplitSpec, split_by_group
from probes.metrics.roc import auc

__all__ = ["FeatureSet", "ProbeResult", "extract_features", "fit_linear_probes", "gap",
           "split_by_group"]

# validation metric that chooses C → its sign in the minimised key (lower cross-entropy, higher AUC/accuracy)
SELECT = {"cross_entropy": 1.0, "auc": -1.0, "accuracy": -1.0}
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 13))


# ------------------------------------------------------------------------------ features
def gap(act: Tensor) -> Tensor:
    """Global average pool ``(N, C, *spatial) -> (N, C)``: mean over all spatial positions.

    A ``(N, C)`` activation (e.g. a linear layer) is returned as is. NaN/Inf are refused: a
    pooled feature would hide where they came from.
    """
    if not isinstance(act, Tensor):
        raise InputTypeError("act", type(act).__name__, "a torch.Tensor (N, C, *spatial)",
                             message=f"act must be a torch.Tensor (N, C, *spatial), got {type(act).__name__}")
    if act.dim() < 2:
        raise ShapeError("act", f"shape {tuple(act.shape)}", "(N, C) or (N, C, *spatial)",
                         message=f"an activation must be at least (N, C), got shape {tuple(act.shape)} (act)")
    check_finite(act, "act")
    return act if act.dim() == 2 else act.flatten(2).mean(-1)


@dataclass(frozen=True)
class FeatureSet(Result, Mapping[str, np.ndarray]):
    """Pooled features per point (``(N, C)`` float32 arrays) and their row manifest.

    ``case_ids``, ``labels`` (or None) and ``groups`` (patient ids; default the case ids) are
    aligned with the rows. Behaves as a read-only mapping point → array.
    """

    features: dict[str, np.ndarray]
    case_ids: np.ndarray
    labels: np.ndarray | None
    groups: np.ndarray
    title: ClassVar[str] = "Pooled features (global average per channel)"

    def __getitem__(self, point: str) -> np.ndarray:
        if point not in self.features:
            raise KeyError(f"no features for point {point!r}; points are {list(self.features)}")
        return self.features[point]

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def n(self) -> int:
        """Number of rows (samples)."""
        return len(self.case_ids)

    def manifest(self) -> pd.DataFrame:
        """One row per sample: row, case_id, label (NA when none), group."""
        return pd.DataFrame({"row": np.arange(self.n), "case_id": self.case_ids,
                             "label": self.labels if self.labels is not None else pd.NA,
                             "group": self.groups})

    def to_frame(self) -> pd.DataFrame:
        """Tidy long copy: case_id, group, label (when known), point, channel, ``metric``
        ("gap"), ``value``; points in order, then cases, then channels."""
        parts = []
        for point, a in self.features.items():
            n, c = a.shape
            cols = {"case_id": np.repeat(self.case_ids, c), "group": np.repeat(self.groups, c)}
            if self.labels is not None:
                cols["label"] = np.repeat(self.labels, c)
            cols.update(point=point, channel=np.tile(np.arange(c), n), metric="gap", value=a.reshape(-1))
            parts.append(pd.DataFrame(cols))
        return tidy(pd.concat(parts, ignore_index=True))

    def _summary_tables(self) -> pd.DataFrame:
        return pd.DataFrame({"point": list(self.features),
                             "channels": [a.shape[1] for a in self.features.values()],
                             "cases": [a.shape[0] for a in self.features.values()]})

    def _notes(self) -> Sequence[str]:
        labels = "no labels" if self.labels is None else ", ".join(
            f"{k} × label {v}" for v, k in zip(*np.unique(self.labels, return_counts=True)))
        return (f"{self.n} cases from {len(set(self.groups))} groups (patients); {labels}",)


def _unpack(batch: Any, keys: Mapping[str, str], start: int) -> tuple[Tensor, Any, list, list | None]:
    """(x, labels, case ids, groups) from a dict batch, an (x, y, ...) tuple or a tensor."""
    if isinstance(batch, Tensor):
        x, y, ids, grp = batch, None, None, None
    elif isinstance(batch, Mapping):
        if keys["image"] not in batch:
            raise KeyError(f"batch dict has no image key {keys['image']!r}; keys are {list(batch)} "
                           "(pass image_key=...)")
        x = batch[keys["image"]]
        y = batch.get(keys["label"])
        ids, grp = batch.get(keys["case_id"]), batch.get(keys["group"])
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
        ids, grp = None, None
    else:
        raise InputTypeError("loader", type(batch).__name__, "batches of tensors, dicts or (x, y) tuples",
                             message=f"loader: a batch must be a tensor, a dict with {keys['image']!r}, or an "
                                     f"(x, y) tuple; got {type(batch).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 3:
        raise ShapeError("loader", shape_of(x), "(N, C, *spatial) batch images",
                         message=f"loader: batch images must be a tensor (N, C, *spatial); got "
                                 f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    n = x.shape[0]
    ids = [str(start + i) for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise ShapeError("loader", f"{len(ids)} case ids", f"{n} (one per image of the batch)",
                         message=f"loader: batch has {n} images but {len(ids)} case ids")
    if y is not None:
        y = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y).reshape(-1)
        if y.shape[0] != n:
            raise ShapeError("loader", f"{y.shape[0]} labels", f"{n} (one per image of the batch)",
                             message=f"loader: batch has {n} images but {y.shape[0]} labels")
    grp = None if grp is None else [str(g) for g in grp]
    return x, y, ids, grp


def _safe_name(point: str) -> str:
    return re.sub(r"[^A-Za-z0-9._#-]", "_", point)


def _fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over parameter and buffer names, shapes and values (cache key of a model)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_cache(folder: Path, points: list[str], fp: str) -> FeatureSet | None:
    meta_f, man_f = folder / "features.json", folder / "manifest.parquet"
    if not (meta_f.exists() and man_f.exists()):
        return None
    meta = json.loads(meta_f.read_text())
    if meta.get("model") != fp:
        raise ValueError(f"feature cache {str(folder)!r} was written for another model (fingerprint "
                         f"{meta.get('model')} != {fp}); use another cache_dir or delete it")
    files = meta.get("points", {})
    if not all(p in files and (folder / files[p]).exists() for p in points):
        return None
    man = pd.read_parquet(man_f)
    feats = {p: np.load(folder / files[p]) for p in points}
    for p, a in feats.items():
        if a.shape[0] != len(man):
            raise ValueError(f"feature cache {str(folder)!r}: {files[p]} has {a.shape[0]} rows but the "
                             f"manifest has {len(man)}")
    labels = None if man["label"].isna().all() else man["label"].to_numpy()
    return FeatureSet(feats, man["case_id"].astype(str).to_numpy(object), labels,
                      man["group"].astype(str).to_numpy(object))


def _write_cache(folder: Path, fs: FeatureSet, fp: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta_f = folder / "features.json"
    meta = json.loads(meta_f.read_text()) if meta_f.exists() else {"points": {}}
    meta["model"] = fp
    used = set(meta["points"].values())
    for p, a in fs.features.items():
        name = meta["points"].get(p)
        if name is None:
            name, k = f"{_safe_name(p)}.npy", 1
            while name in used:
                name, k = f"{_safe_name(p)}-{k}.npy", k + 1
            used.add(name)
            meta["points"][p] = name
        np.save(folder / name, a)
    man = fs.manifest()[["case_id", "label", "group", "row"]]
    man["label"] = pd.array(man["label"], dtype="Int64") if fs.labels is not None else pd.NA
    man.to_parquet(folder / "manifest.parquet", index=False)
    meta_f.write_text(json.dumps(meta, indent=1))


def extract_features(model: nn.Module | HookRegistry, loader: Iterable[Any], points: str | Sequence[str], *,
                     cache_dir: str | Path | None = None, image_key: str = "image",
                     label_key: str = "label", id_key: str = "case_id",
                     group_key: str = "patient_id") -> FeatureSet:
    """Global-average-pooled activations ``(N, C)`` per point, streamed batch by batch.

    Args:
        model: an ``nn.Module`` or a ``HookRegistry`` on it; the model runs under
            ``torch.no_grad`` in eval mode (a training-mode model is switched, with a warning,
            and restored: ``probes.core.model_state``), with its declared input layout, and is
            left as found.
        loader: any iterable of batches: dicts (``image``/``label``/``case_id``/``patient_id``
            keys, e.g. ``audit.data.CohortDataset`` through a DataLoader), ``(x, y)`` tuples
            or bare tensors ``(N, C, *spatial)``. Missing ids become running row numbers;
            missing groups default to the case ids. Images are checked like any input
            (``probes.core.validate.as_input``: channels against the model, finite values, cast
            to the model's dtype).
        points: hook point name(s), e.g. ``[f"{b}.resid" for b in HookRegistry(model).blocks]``.
        cache_dir: if given, write one ``.npy`` per point plus ``manifest.parquet`` (case_id,
            label, group, row) and ``features.json`` (point → file, model fingerprint); a later
            call with the same model and points loads them without running the model. The
            cache does not check the loader: use one folder per cohort.

    Returns:
        FeatureSet with ``float32`` arrays; ``GAP(a)_c = (1/P) Σ_p a_{c,p}``.
    """
    reg = registry_of(model)
    points = as_points(reg, points)
    folder = Path(cache_dir) if cache_dir is not None else None
    fp = _fingerprint(reg.model) if folder is not None else ""
    if folder is not None:
        cached = _load_cache(folder, points, fp)
        if cached is not None:
            return cached
    keys = {"image": image_key, "label": label_key, "case_id": id_key, "group": group_key}
    device = model_device(reg.model)
    feats: dict[str, list[np.ndarray]] = {p: [] for p in points}
    ids: list[str] = []
    labels: list[np.ndarray] = []
    groups: list[str] = []
    has_labels = has_groups = None
    if isinstance(loader, (Tensor, np.ndarray)):
        batches: Iterable[Any] = [loader]
    elif isinstance(loader, Iterable) and not isinstance(loader, (str, bytes, Mapping)):
        batches = loader
    else:
        raise InputTypeError("loader", type(loader).__name__, "an iterable of batches or a tensor",
                             message=f"loader must be an iterable of batches or a tensor (N, C, *spatial), "
                                     f"got {type(loader).__name__}")
    with model_state(reg.model, warn="extract_features"):
        for bi, batch in enumerate(batches):
            x, y, bid, grp = _unpack(batch, keys, len(ids))
            x = as_input(x, "loader" if bi == 0 else f"loader (batch {bi})", model=reg.model)
            if has_labels is None:
                has_labels, has_groups = y is not None, grp is not None
            if (y is not None) != has_labels or (grp is not None) != has_groups:
                raise ShapeError("loader", f"batch {bi}", "every batch carrying labels/groups alike",
                                 message=f"loader: batch starting at row {len(ids)} differs from the first "
                                         "batch in whether it carries labels/groups")
            _, cache = reg.run_with_cache(x.to(device), points=points)
            for p in points:
                feats[p].append(gap(cache[p]).float().cpu().numpy())
            ids.extend(bid)
            groups.extend(grp if grp is not None else bid)
            if y is not None:
                labels.append(y)
    if not ids:
        raise ShapeError("loader", "no batches", "at least one batch", message="loader yielded no batches")
    fs = FeatureSet({p: np.concatenate(v) for p, v in feats.items()}, np.array(ids, object),
                    np.concatenate(labels) if has_labels else None, np.array(groups, object))
    if folder is not None:
        _write_cache(folder, fs, fp)
    return fs


# -------------------------------------------------------------------------------- probes
@dataclass(frozen=True, eq=False)
class ProbeResult(Result):
    """Linear-probe results.

    ``table`` (native): columns point, task ("real" | "control"), split, metric (auc,
    accuracy, cross_entropy, n_samples, n_patients), value, C (chosen on val; NaN when no
    probe could be fit) and reason (why a value is NaN: a split that is empty or has one class
    only; "" where defined).
    ``assignment``: row, case_id, group, split, label, control_label for every sample.
    ``val_curve``: point, task, C, val metrics per candidate C (the selection trace).
    """

    table: pd.DataFrame
    assignment: pd.DataFrame
    val_curve: pd.DataFrame
    select: str = "cross_entropy"
    notes: tuple[str, ...] = field(default_factory=tuple)
    title: ClassVar[str] = "Linear probes"

    def to_frame(self) -> pd.DataFrame:
        """Tidy long copy: point, task, split, C (the probe's chosen C), reason, ``metric``, ``value``."""
        return tidy(self.table)

    def tables(self) -> dict[str, pd.DataFrame]:
        """``probes`` (:meth:`to_frame`), ``assignment`` (case_id, group, split; metric label and
        control_label) and ``val_curve`` (point, task, C; val auc, accuracy, cross_entropy)."""
        a = self.assignment
        labels = ["label"] + (["control_label"] if a["control_label"].notna().all() else [])
        return {"probes": self.to_frame(),
                "assignment": long_frame(a, ["case_id", "group", "split"], labels),
                "val_curve": long_frame(self.val_curve, ["point", "task", "C"], ["auc", "accuracy", "cross_entropy"])}

    def wide(self) -> pd.DataFrame:
        """One row per (point, task): ``<split>_<metric>`` columns plus C, points in order."""
        t = self.table
        w = t.pivot_table(index=["point", "task"], columns=["split", "metric"], values="value",
                          sort=False, dropna=False)  # an undefined metric stays as a NaN column
        w.columns = [f"{s}_{m}" for s, m in w.columns]
        c = t.groupby(["point", "task"], sort=False)["C"].first()
        return w.join(c).reset_index()

    def selectivity(self) -> pd.DataFrame:
        """Per point: test AUC of the real task minus that of the control task."""
        w = self.wide().set_index(["point", "task"])["test_auc"].unstack("task")
        order = list(dict.fromkeys(self.table["point"]))
        return (w["real"] - w["control"]).rename("selectivity").reindex(order).reset_index()

    def summary(self) -> Summary:
        """Per point: C, val and test AUC, control test AUC, selectivity; split sizes as notes."""
        w = self.wide()
        real = w[w.task == "real"].set_index("point")
        ctrl = w[w.task == "control"].set_index("point")["test_auc"].reindex(real.index)
        table = pd.DataFrame({"point": real.index, "C": real["C"].to_numpy(),
                              "val_auc": real["val_auc"].to_numpy(), "test_auc": real["test_auc"].to_numpy(),
                              "control_test_auc": ctrl.to_numpy(),
                              "selectivity": (real["test_auc"] - ctrl).to_numpy()})
        a = self.assignment
        sizes = ", ".join(f"{s}: {int((a.split == s).sum())} samples / {a[a.split == s].group.nunique()} "
                          f"patients" for s in SPLITS)
        return render_summary(f"{self.title} (C chosen on val by {self.select})", table,
                              [f"split sizes: {sizes}", *self.notes])


def _control_labels(y: np.ndarray, g: np.ndarray, s: np.ndarray, seed: int) -> tuple[np.ndarray, list[str]]:
    """Labels permuted at the patient level within each split (seeded)."""
    rng = np.random.default_rng(seed + 7919)
    out = y.copy()
    notes = []
    for name in SPLITS:
        idx = np.flatnonzero(s == name)
        frame = pd.DataFrame({"g": g[idx], "y": y[idx]})
        lab = frame.groupby("g", sort=True)["y"]
        if (lab.nunique() == 1).all():
            pats = lab.first()
            perm = dict(zip(pats.index, pats.to_numpy()[rng.permutation(len(pats))]))
            out[idx] = [perm[v] for v in g[idx]]
        else:
            notes.append(f"note: some patients in {name!r} have mixed labels; the control permutes "
                         "labels across samples there")
            out[idx] = y[idx][rng.permutation(len(idx))]
    return out, notes


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC (Mann–Whitney), accuracy at p ≥ 0.5 and mean cross-entropy −[y ln p + (1−y) ln(1−p)].

    NaN where undefined: every metric of an empty split, the AUC of a split with one class.
    """
    if len(y) == 0:
        return {"auc": float("nan"), "accuracy": float("nan"), "cross_entropy": float("nan")}
    pc = np.clip(p, 1e-15, 1 - 1e-15)
    return {"auc": auc(y, p) if len(np.unique(y)) == 2 else float("nan"),
            "accuracy": float(((p >= 0.5).astype(int) == y).mean()),
            "cross_entropy": float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean())}


def _fit_one(X: np.ndarray, y: np.ndarray, idx: dict[str, np.ndarray], Cs: Sequence[float],
             select: str, max_iter: int, seed: int):
    """(C, scores per split, val trace, unconverged Cs); C is None when no C can be chosen
    (the validation metric is undefined for every candidate)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X[idx["train"]])  # train rows only
    Z = {k: scaler.transform(X[v]) if len(v) else X[v] for k, v in idx.items()}
    trace, best, unconverged = [], None, []
    for C in Cs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(Z["train"], y[idx["train"]])
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            unconverged.append(C)
        pv = clf.predict_proba(Z["val"])[:, 1] if len(idx["val"]) else np.empty(0)
        m = _metrics(y[idx["val"]], pv)  # val rows only
        trace.append({"C": C, **m})
        key = SELECT[select] * m[select]
        if np.isfinite(key) and (best is None or key < best[0] - 1e-12):
            best = (key, C, clf)
    if best is None:
        return None, None, trace, unconverged
    _, C, clf = best
    scores = {k: _metrics(y[v], clf.predict_proba(Z[k])[:, 1] if len(v) else np.empty(0))
              for k, v in idx.items()}  # test once
    return C, scores, trace, unconverged


def _split_problems(y: np.ndarray, idx: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Why a split cannot score a probe: empty, or one class only (no AUC, and no fit in train)."""
    out = {}
    for k, v in idx.items():
        classes = np.unique(y[v])
        if len(v) == 0:
            out[k] = f"split {k!r} is empty"
        elif len(classes) < 2:
            out[k] = f"split {k!r} has {len(v)} sample(s) of class(es) {classes.tolist()} only"
    return out


def _probe_rows(point: str, task: str, C: float | None, scores: Mapping[str, dict] | None,
                counts: Mapping[str, tuple[int, int]], problems: Mapping[str, str], why_none: str) -> list[dict]:
    """Tidy rows of one probe; each NaN metric carries its reason."""
    rows = []
    for k in SPLITS:
        for m in ("auc", "accuracy", "cross_entropy"):
            v = float("nan") if scores is None else scores[k][m]
            reason = "" if np.isfinite(v) else (why_none if scores is None else problems.get(k, "undefined"))
            rows.append({"point": point, "task": task, "split": k, "metric": m, "value": float(v),
                         "C": float("nan") if C is None else C, "reason": reason})
        for m, v in (("n_samples", counts[k][0]), ("n_patients", counts[k][1])):
            rows.append({"point": point, "task": task, "split": k, "metric": m, "value": float(v),
                         "C": float("nan") if C is None else C, "reason": ""})
    return rows


def fit_linear_probes(features: Mapping[str, np.ndarray], labels: Sequence[int] | None = None,
                      groups: Sequence[Any] | None = None, *, case_ids: Sequence[Any] | None = None,
                      split: SplitSpec = (0.6, 0.2, 0.2), Cs: Sequence[float] = DEFAULT_CS,
                      select: str = "cross_entropy", control: bool = True, seed: int = 0,
                      max_iter: int = 2000) -> ProbeResult:
    """Fit one L2 logistic-regression probe per point with a patient-grouped train/val/test split.

    Args:
        features: point → ``(N, C)`` array (a :class:`FeatureSet` also supplies labels/groups).
        labels: binary 0/1 per sample. groups: patient id per sample (default: one per sample).
        case_ids: one id per sample, kept in ``assignment`` (default: the FeatureSet's, else
            ``"0"``, ``"1"``, ...).
        split: 3 fractions of patients (seeded, stratified by patient label), a mapping
            group → "train"/"val"/"test", or per-sample split names; see :func:`split_by_group`.
        Cs: candidate inverse regularisation strengths; the one with the best validation
            ``select`` metric ("cross_entropy" (lowest), "auc" or "accuracy") is kept, ties to
            the first (smallest, most regularised) C in the given order.
        control: also fit the control task (labels permuted per patient within each split).

    Protocol: ``z = (x − μ_train) / σ_train``; ``p = σ(wᵀz + b)`` minimising
    ``½‖w‖² + C Σ_train CE``; metrics per split: AUC (Mann–Whitney, ties ½), accuracy at
    ``p ≥ 0.5`` and mean cross-entropy. Returns a :class:`ProbeResult`.

    A split too small to test is not an error but an undefined number: with one class only (or
    no sample) in train no probe is fit and every metric is NaN; in val the AUC is NaN (and C,
    when chosen by AUC or accuracy, cannot be chosen); in test the AUC is NaN. Each NaN carries
    its reason in the ``reason`` column and one ``UndefinedValueWarning`` is raised.
    """
    if isinstance(features, FeatureSet):
        labels = features.labels if labels is None else labels
        groups = features.groups if groups is None else groups
        case_ids = features.case_ids if case_ids is None else case_ids
    if not isinstance(features, Mapping) or not features:
        raise InputTypeError("features", type(features).__name__, "a non-empty mapping point → (N, C) array",
                             message="features must be a non-empty mapping point → (N, C) array, got "
                                     f"{type(features).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for p, a in features.items():
        a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a)
        if a.dtype.kind not in "biuf":
            raise InputTypeError(f"features[{p!r}]", f"dtype {a.dtype}", "a numeric (N, C) array")
        arrays[str(p)] = a.astype(np.float64)
    n = next(iter(arrays.values())).shape[0] if next(iter(arrays.values())).ndim else 0
    for p, a in arrays.items():
        if a.ndim != 2 or a.shape[0] != n or n == 0:
            raise ShapeError(f"features[{p!r}]", f"shape {a.shape}", f"(N, C) with N = {n} >= 1",
                             message=f"features[{p!r}] must be (N, C) with N = {n} >= 1, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise NonFiniteError(f"features[{p!r}]", f"{int((~np.isfinite(a)).sum())} NaN/inf value(s)",
                                 "finite values",
                                 message=f"features[{p!r}] contains {int((~np.isfinite(a)).sum())} NaN/inf value(s)")
    if labels is None:
        raise LabelError("labels", None, "0/1 per sample",
                         message="labels are required (none given and the features carry none)")
    if hasattr(labels, "__len__") and not isinstance(labels, (str, bytes)) and np.ndim(labels) == 1 \
            and len(labels) != n:
        raise ShapeError("labels", f"{len(labels)} entries", f"{n} (the rows of features)",
                         message=f"labels has {len(labels)} entries for the {n} rows of features")
    y = as_labels(labels, n, binary=True)
    ids = as_case_ids(case_ids, n)
    if groups is not None and (isinstance(groups, (str, bytes)) or np.ndim(groups) != 1):
        raise ShapeError("groups", shape_of(groups), f"one entry per sample ({n})",
                         message=f"groups must have one entry per sample ({n}), got {shape_of(groups)}")
    g = np.asarray([str(v) for v in (groups if groups is not None else range(n))], object)
    if g.shape != (n,):
        raise ShapeError("groups", f"shape {g.shape}", f"one entry per sample ({n})",
                         message=f"groups must have one entry per sample ({n}), got shape {g.shape}")
    check_choice(select, "select", list(SELECT))
    try:
        Cs = [float(c) for c in Cs]
    except (TypeError, ValueError):
        raise OptionError("Cs", repr(Cs), "positive finite numbers") from None
    if not Cs or any(not np.isfinite(c) or c <= 0 for c in Cs):
        raise OptionError("Cs", Cs, "positive finite numbers", message=f"Cs must be positive finite numbers, got {Cs}")
    s = split_by_group(g, split, labels=y, seed=seed)
    idx = {k: np.flatnonzero(s == k) for k in SPLITS}
    # a split without both classes cannot score a probe: its numbers are NaN with the reason
    problems = _split_problems(y, idx)
    if "train" in problems:
        why_none = f"no probe could be fit: {problems['train']}"
    elif "val" in problems and select != "cross_entropy":
        why_none = f"C cannot be chosen by validation {select}: {problems['val']}"
    else:
        why_none = "no C has a defined validation metric"
    tasks = {"real": y}
    notes: list[str] = []
    yc = None
    if control:
        yc, notes = _control_labels(y, g, s, seed)
        tasks["control"] = yc
    rows, curve, unconv = [], [], []
    from threadpoolctl import threadpool_limits  # small fits: BLAS threads only oversubscribe

    counts = {k: (len(v), len(set(g[v]))) for k, v in idx.items()}
    with threadpool_limits(limits=1):
        for p, X in arrays.items():
            for task, yy in tasks.items():
                if "train" in problems:
                    C, scores = None, None
                else:
                    C, scores, trace, bad = _fit_one(X, yy, idx, Cs, select, max_iter, seed)
                    unconv += [f"{p}/{task}/C={c:g}" for c in bad]
                    curve += [{"point": p, "task": task, **t} for t in trace]
                rows += _probe_rows(p, task, C, scores, counts, problems, why_none)
    if unconv:
        warnings.warn(f"logistic regression did not converge in {max_iter} iterations for "
                      f"{len(unconv)} fit(s), e.g. {unconv[:4]}", stacklevel=2)
        notes.append(f"note: {len(unconv)} fit(s) did not converge")
    table = pd.DataFrame(rows)
    warn_undefined("fit_linear_probes", table.loc[table["value"].isna(), "reason"])
    notes += [f"note: {v}; its metrics that need it are NaN" for v in problems.values()]
    assignment = pd.DataFrame({"row": np.arange(n), "case_id": ids, "group": g, "split": s, "label": y,
                               "control_label": yc if yc is not None else pd.NA})
    curve_cols = ["point", "task", "C", "auc", "accuracy", "cross_entropy"]
    return ProbeResult(table, assignment, pd.DataFrame(curve, columns=curve_cols), select, tuple(notes))
