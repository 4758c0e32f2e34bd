"""What every instrument of a run sees: the model, the audited cases, their masks and labels.

:func:`build_context` turns a validated :class:`RunConfig` into a :class:`Context`: it loads (or
trains) the model, reads the cohort (synthetic generator, NIfTI manifest or 2D image files),
applies the preprocessing, keeps the audited split (at most ``cohort.max_cases`` cases) and
checks that model and cohort fit each other — channel count, spatial dims, a forward pass in the
declared layout, ROI names — raising :class:`ConfigError` that names the offending key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audit.data.cohort import Cohort
from audit.run.config import LAYOUTS, ConfigError, RunConfig

__all__ = ["Context", "build_context", "weights_sha256"]


@dataclass
class Context:
    """The run's model and cases, shared read-only by every instrument."""

    cfg: RunConfig
    model: nn.Module
    task: str
    cohort: Cohort
    extra: dict[str, Cohort] = field(default_factory=dict)
    rois: tuple[str, ...] = ()
    target: int = 1
    class_names: tuple[str, ...] = ()
    points: tuple[str, ...] = ()  # every residual block's .resid; without blocks every conv's output
    blocks: tuple[str, ...] = ()
    device: torch.device = torch.device("cpu")
    weights_sha256: str = ""
    data_hash: str = ""
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)  # set by the runner
    # values several units share within one process (deterministic in the run's seed, so a
    # resumed or distributed run recomputes the same ones)
    memo: dict[tuple, Any] = field(default_factory=dict)

    def results(self, instrument: str) -> dict[str, Any]:
        """Tables of an instrument that ran earlier in this run (``Instrument.after``), by name."""
        if instrument not in self.finished:
            raise KeyError(f"instrument {instrument!r} has no results in this run")
        return self.finished[instrument]

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.cfg.seed

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel (contrast) names of the audited cases."""
        return self.cohort[0].channels

    @property
    def n(self) -> int:
        """Number of audited cases."""
        return len(self.cohort)

    @property
    def has_labels(self) -> bool:
        """Whether every audited case has a label."""
        return all(c.label is not None for c in self.cohort)

    @property
    def n_classes_present(self) -> int:
        """Distinct labels among the audited cases (0 without labels)."""
        return len({c.label for c in self.cohort}) if self.has_labels else 0

    def cases(self, start: int = 0, stop: int | None = None, cohort: str | None = None) -> list:
        """Cases ``[start, stop)`` of the audited cohort or of an extra set (``cohort=name``)."""
        src = self.cohort if cohort is None else self.extra[cohort]
        return list(src)[start:stop]

    def x(self, start: int = 0, stop: int | None = None, cohort: str | None = None) -> torch.Tensor:
        """Images ``(N, C, *spatial)`` float32 on the run's device, channels first (the model's layout is its
        own business)."""
        x = torch.stack([torch.tensor(np.array(c.image)) for c in self.cases(start, stop, cohort)])
        return x.to(self.device)

    def labels(self, start: int = 0, stop: int | None = None, cohort: str | None = None) -> np.ndarray:
        """Labels as int64 (−1 where a case has none)."""
        return np.array([-1 if c.label is None else c.label for c in self.cases(start, stop, cohort)], np.int64)

    def case_ids(self, start: int = 0, stop: int | None = None, cohort: str | None = None) -> list[str]:
        """Case ids."""
        return [c.case_id for c in self.cases(start, stop, cohort)]

    def groups(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Patient ids (the grouping of patient-level splits)."""
        return [c.patient_id for c in self.cases(start, stop)]

    def masks(self, start: int = 0, stop: int | None = None, rois: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """ROI masks ``{roi: (N, *spatial) bool}``; a case without a mask gets an empty one."""
        cases = self.cases(start, stop)
        shape = cases[0].image.shape[1:]
        return {r: np.stack([c.masks.get(r, np.zeros(shape, bool)) for c in cases]) for r in (rois or self.rois)}

    def show_index(self, k: int) -> list[int]:
        """Indices (ascending) of the ``k`` audited cases whose maps the report shows.

        A labelled classifier run shows one case of each outcome for the target class first (true
        negative, false negative, true positive, false positive: the first case of each, by the
        model's argmax), then the first remaining cases; otherwise the first ``k`` cases.
        """
        k = max(0, min(int(k), self.n))
        key = ("show_index", k)
        if key not in self.memo:
            picked: list[int] = []
            if self.task == "classification" and self.has_labels and k:
                from probes.core.model import as_audit_model, class_probabilities

                step = max(1, int(self.cfg.batch_size or 16))
                with torch.no_grad():
                    pred = np.concatenate([class_probabilities(as_audit_model(self.model), self.x(a, a + step))
                                           .argmax(1).cpu().numpy() for a in range(0, self.n, step)])
                pos, hit = self.labels() == self.target, pred == self.target
                for want in ((~pos) & (~hit), pos & (~hit), pos & hit, (~pos) & hit):  # TN, FN, TP, FP
                    i = np.flatnonzero(want)
                    if len(i) and len(picked) < k:
                        picked.append(int(i[0]))
            picked += [i for i in range(self.n) if i not in picked][: k - len(picked)]
            self.memo[key] = sorted(picked)
        return list(self.memo[key])

    def unit_seed(self, *parts: Any) -> int:
        """A seed for one unit, from the run's seed and the unit's identity (not its order)."""
        text = "/".join(str(p) for p in (self.seed, *parts))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(["device: 'cuda' is not available on this machine (use cpu or auto)"])
    return torch.device(name)


def _synthetic(cfg: RunConfig) -> dict[str, Cohort]:
    from audit.synthetic import SyntheticConfig, make_splits

    try:
        scfg = SyntheticConfig(**cfg.cohort.synthetic)
    except (TypeError, ValueError) as err:
        raise ConfigError([f"cohort.synthetic: {err}"]) from None
    return make_splits(scfg)


def _read_cohort(cfg: RunConfig, splits: dict[str, Cohort] | None = None
                 ) -> tuple[Cohort, dict[str, Cohort], dict[str, Cohort]]:
    """(audited cases, extra sets by name, training splits) before preprocessing."""
    spec = cfg.cohort
    if spec.source == "synthetic":
        splits = splits or _synthetic(cfg)
        name = spec.split or "test"
        if name not in ("train", "val", "test"):
            raise ConfigError([f"cohort.split: {name!r} is not one of train, val, test (synthetic cohorts)"])
        known = [k.removeprefix("test_") for k in splits if k.startswith("test_")]
        bad = [c for c in spec.counterfactuals if c not in known]
        if bad:
            raise ConfigError([f"cohort.counterfactuals: {bad[0]!r} is not one of {', '.join(known)}"])
        if spec.counterfactuals and name != "test":
            raise ConfigError(["cohort.counterfactuals: counterfactual sets exist for the test split only"])
        extra = {c: splits[f"test_{c}"] for c in spec.counterfactuals}
        return splits[name], extra, {k: splits[k] for k in ("train", "val")}
    if spec.counterfactuals:
        raise ConfigError(["cohort.counterfactuals: only synthetic cohorts have counterfactual sets"])
    if spec.source == "manifest":
        from audit.data.nifti import read_manifest

        if not spec.manifest.is_file():
            raise ConfigError([f"cohort.manifest: file not found: {spec.manifest}"])
        cohort = read_manifest(spec.manifest, channels=spec.channels, patient_id_col=spec.group_column,
                               num_workers=cfg.num_workers)
    else:
        from audit.data.images import read_images

        for key, p in (("manifest", spec.manifest), ("folder", spec.folder)):
            if p is not None and not p.exists():
                raise ConfigError([f"cohort.{key}: not found: {p}"])
        cohort = read_images(manifest=spec.manifest, folder=spec.folder, channels=spec.channels,
                             num_workers=cfg.num_workers)
    if spec.split is not None:
        values = {str(c.meta.get(spec.split_column)) for c in cohort}
        if spec.split not in values:
            raise ConfigError([f"cohort.split: {spec.split!r} is not a value of column {spec.split_column!r} "
                               f"(found: {', '.join(sorted(values))})"])
        cohort = Cohort([c for c in cohort if str(c.meta.get(spec.split_column)) == spec.split], cohort.meta)
    return cohort, {}, {}


def _load(cfg: RunConfig, train_splits: dict[str, Cohort]) -> nn.Module:
    from audit.models import load_model

    m = cfg.model
    layout = LAYOUTS[m.input_layout][0]
    if m.train is not None:
        from audit.training import TrainConfig, train_or_load

        if not train_splits:
            raise ConfigError(["model.train: training needs a synthetic cohort (cohort.source: synthetic)"])
        try:
            tc = TrainConfig(**{"task": m.task, **m.train})
        except TypeError as err:
            raise ConfigError([f"model.train: {err}"]) from None
        return train_or_load(train_splits, tc, Path(cfg.out) / "model").model
    torch.manual_seed(cfg.seed)  # an architecture without a checkpoint is initialised from the run's seed
    if m.path is not None and not m.path.exists():
        raise ConfigError([f"model.path: file not found: {m.path}"])
    try:
        return load_model(m.path, m.arch, num_classes=m.num_classes, in_chans=m.in_chans,
                          trust_checkpoint=m.trust_checkpoint, input_layout=layout, output=m.output,
                          **m.arch_kwargs)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise ConfigError([f"model: {err}"]) from None


def _check_fit(cfg: RunConfig, model: nn.Module, cohort: Cohort, rois: list[str]) -> None:
    from probes.core.validate import expected_channels

    m, problems = cfg.model, []
    dims = cohort[0].ndim_spatial
    if dims != m.spatial_dims:
        problems.append(f"model.input_layout: {m.input_layout!r} is {m.spatial_dims}-D but the cohort's cases "
                        f"are {dims}-D (shape {cohort[0].image.shape}); use "
                        f"{' or '.join(k for k, v in LAYOUTS.items() if v[1] == dims)}")
    want = expected_channels(model)
    have = len(cohort[0].channels)
    if want is not None and want != have:
        problems.append(f"cohort.channels: the cohort has {have} channel(s) {list(cohort[0].channels)} but the "
                        f"model's first convolution takes {want}")
    if problems:
        raise ConfigError(problems)
    from probes.core.model import as_audit_model

    x = torch.tensor(np.array(cohort[0].image))[None]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            out = as_audit_model(model)(x)
            model.train(was)
    except Exception as err:  # any failure of the probe forward is a layout/shape mismatch to report
        raise ConfigError([f"model.input_layout: a forward pass on one case (shape {tuple(x.shape)}, fed as "
                           f"{m.input_layout}) failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"]) from None
    if m.class_names is not None and m.task == "classification" and out.shape[1] != len(m.class_names):
        raise ConfigError([f"model.class_names: {len(m.class_names)} names but the model has {out.shape[1]} outputs"])


def build_context(cfg: RunConfig, splits: dict[str, Cohort] | None = None) -> Context:
    """Load model and cohort, preprocess, check that they fit (see the module docstring).

    ``splits``: the synthetic cohort's splits when the caller has generated them already (they
    must come from ``cohort.synthetic``; the data hash covers them either way).

    Raises:
        ConfigError: a key whose value does not fit the files, the model or the cohort.
    """
    from audit.run.preprocess import preprocess
    from probes.hooks.registry import HookRegistry

    device = _device(cfg.device)
    cohort, extra, train_splits = _read_cohort(cfg, splits)
    if len(cohort) < 2:
        raise ConfigError([f"cohort: the audited split has {len(cohort)} case(s); at least 2 are needed"])
    cohort = preprocess(cohort[: cfg.cohort.max_cases], cfg.preprocess)
    extra = {k: preprocess(v[: cfg.cohort.max_cases], cfg.preprocess) for k, v in extra.items()}
    have = sorted({r for c in cohort for r in c.masks})
    rois = cfg.cohort.rois if cfg.cohort.rois is not None else have
    bad = [r for r in rois if r not in have]
    if bad:
        raise ConfigError([f"cohort.rois: {bad[0]!r} is not a mask of this cohort (masks: {', '.join(have) or 'none'})"])
    model = _load(cfg, train_splits)
    _check_fit(cfg, model, cohort, rois)
    model = model.to(device)  # the run's own copy (loaded here), so moving it changes nothing of the user's
    n_out = cfg.model.num_classes or 2
    names = tuple(cfg.model.class_names or _cohort_names(cohort) or [str(i) for i in range(n_out)])
    pos = cfg.model.positive_class
    if isinstance(pos, str):
        if pos not in names:
            raise ConfigError([f"model.positive_class: {pos!r} is not one of the class names {list(names)}"])
        pos = names.index(pos)
    reg = HookRegistry(model)
    resid = tuple(p for p in reg.points if p.endswith(".resid"))
    if not resid:  # a plain CNN (VGG-like, most ONNX exports): every convolution's output
        resid = tuple(n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd))
    return Context(cfg, model, cfg.model.task, cohort, extra, tuple(rois), int(pos), names, resid,
                   tuple(reg.blocks), device, weights_sha256(model), _data_hash(cohort, extra))


def _cohort_names(cohort: Cohort) -> list[str] | None:
    """Class names the cohort carries: the synthetic generator's ``label_names``, the image reader's ``class_names``."""
    names = cohort.meta.get("label_names") or cohort.meta.get("class_names")
    if isinstance(names, dict):
        return [names[k] for k in sorted(names, key=int)]
    return list(names) if names else None


def _data_hash(cohort: Cohort, extra: dict[str, Cohort]) -> str:
    """sha256 (16 hex) over every audited image, label and mask: a changed case recomputes."""
    h = hashlib.sha256()
    for name, co in {"": cohort, **extra}.items():
        h.update(name.encode())
        for c in co:
            h.update(f"{c.case_id}|{c.label}|{c.patient_id}".encode())
            h.update(np.ascontiguousarray(c.image).tobytes())
            for k in sorted(c.masks):
                h.update(k.encode() + np.packbits(c.masks[k]).tobytes())
    return h.hexdigest()[:16]
