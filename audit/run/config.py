"""The audit-run configuration: one YAML file, validated with pydantic v2.

Every section forbids unknown keys, so a typo is an error that names the key. Errors come out
as :class:`ConfigError`, one line per mistake, each naming the key path, the value and what is
allowed (``model.output: 'prob' is not one of logits, probabilities``). Instrument sections are
validated against each instrument's own parameter model (``audit.run.plugin.INSTRUMENTS``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from probes.core.errors import AuditInputError

__all__ = [
    "LAYOUTS",
    "CohortSpec",
    "ConfigError",
    "ModelSpec",
    "PreprocessSpec",
    "RunConfig",
    "load_config",
    "parse_config",
]

# the declared input layout → probes' ModelInterface layout, and the number of spatial dims
LAYOUTS: dict[str, tuple[str, int]] = {
    "NCHW": ("channels_first", 2), "NHWC": ("channels_last", 2),
    "NCDHW": ("channels_first", 3), "NDHWC": ("channels_last", 3),
}


class ConfigError(AuditInputError):
    """A configuration mistake; ``problems`` holds one ``key: message`` line per mistake."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        text = f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems)
        super().__init__("config", got=source, expected="a valid audit configuration", message=text)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    """The model under audit."""

    path: Path | None = Field(None, description="checkpoint: .pt/.pth/.ckpt state dict, .safetensors or "
                                                 ".onnx; omit with `train` to train one on the synthetic cohort")
    arch: str | None = Field(None, description="a timm name (resnet18) or monai:<Net> (monai:UNet); "
                                                "not needed for ONNX")
    arch_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to the architecture")
    in_chans: int | None = Field(None, ge=1, description="input channels (default: from the checkpoint)")
    num_classes: int | None = Field(None, ge=1, description="classes (default: from the checkpoint)")
    task: Literal["classification", "segmentation"] = Field("classification", description="what the model does")
    input_layout: Literal["NCHW", "NHWC", "NCDHW", "NDHWC"] = Field(
        "NCHW", description="the model's input layout; channels-last exports are NHWC / NDHWC")
    output: Literal["logits", "probabilities"] = Field("logits", description="what the model returns")
    class_names: list[str] | None = Field(None, description="one name per class, in output order")
    positive_class: int | str = Field(1, description="index or name of the class whose evidence is audited")
    trust_checkpoint: bool = Field(False, description="allow full unpickling (runs code from the file)")
    train: dict[str, Any] | None = Field(None, description="train on the synthetic cohort's train/val "
                                                            "splits (audit.training.TrainConfig fields)")

    @model_validator(mode="after")
    def _source(self) -> ModelSpec:
        if self.path is None and self.train is None and self.arch is None:
            raise ValueError("needs path (a checkpoint), train (train one here) or arch")
        if self.class_names is not None and self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}")
        return self

    @property
    def spatial_dims(self) -> int:
        """2 or 3, from the declared layout."""
        return LAYOUTS[self.input_layout][1]


class CohortSpec(_Section):
    """The cases to audit."""

    source: Literal["synthetic", "manifest", "images"] = Field(
        "synthetic", description="synthetic generator, a manifest CSV of NIfTI files, or 2D image files")
    manifest: Path | None = Field(None, description="manifest CSV (source: manifest or images)")
    folder: Path | None = Field(None, description="images laid out one folder per class (source: images)")
    synthetic: dict[str, Any] = Field(default_factory=dict,
                                      description="audit.synthetic.SyntheticConfig fields (source: synthetic)")
    channels: list[str] | None = Field(None, description="channel names (default: the cohort's own)")
    rois: list[str] | None = Field(None, description="ROI masks to use (default: every mask the cohort has)")
    split: str | None = Field("test", description="the split whose cases are audited (synthetic: train/val/test; "
                                                   "manifest: a value of split_column); null = all cases")
    split_column: str = Field("split", description="manifest column holding the split")
    group_column: str = Field("patient_id", description="cases of one patient stay in one probe split")
    counterfactuals: list[str] = Field(default_factory=list,
                                       description="synthetic counterfactual sets to predict on too (t1c_only, ...)")
    max_cases: int = Field(64, ge=2, description="audit at most this many cases (the first ones of the split)")

    @model_validator(mode="after")
    def _files(self) -> CohortSpec:
        if self.source == "manifest" and self.manifest is None:
            raise ValueError("source 'manifest' needs manifest: a CSV path")
        if self.source == "images" and (self.manifest is None) == (self.folder is None):
            raise ValueError("source 'images' needs exactly one of manifest (a CSV) or folder (one folder per class)")
        return self


class SliceSpec(_Section):
    """2D slices from 3D volumes."""

    axis: int = Field(0, ge=0, le=2, description="spatial axis to slice along")
    index: int | Literal["middle", "max_roi"] = Field("middle", description="slice index, the middle one, or the "
                                                                            "slice with the largest ROI")
    roi: str = Field("gtv", description="ROI for index: max_roi")


class PreprocessSpec(_Section):
    """Per-channel intensity normalisation and geometry, applied to every case in this order."""

    slice: SliceSpec | None = Field(None, description="extract one 2D slice per 3D volume")
    clip_percentiles: tuple[float, float] | None = Field(None, description="clip each channel to these "
                                                                           "percentiles, e.g. [0.5, 99.5]")
    normalize: Literal["none", "zscore", "zscore_brain", "minmax"] = Field(
        "none", description="per channel: z-score over the image or over the brain mask, or min-max to [0, 1]")
    resize: list[int] | None = Field(None, description="resize to this spatial shape (linear images, nearest masks)")
    crop: list[int] | None = Field(None, description="centre-crop or pad to this spatial shape")

    @field_validator("clip_percentiles")
    @classmethod
    def _order(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 <= v[0] < v[1] <= 100:
            raise ValueError(f"needs 0 ≤ low < high ≤ 100, got {list(v)}")
        return v


class RunConfig(_Section):
    """One audit run: a model, a cohort, how to prepare it, which instruments, where to write."""

    model: ModelSpec
    cohort: CohortSpec = Field(default_factory=CohortSpec)
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    instruments: dict[str, Any] = Field(default_factory=dict, description="instrument name: true (defaults), "
                                                                          "false (skip) or its parameters")
    out: Path = Field(Path("audit-out"), description="output folder (tables, maps, manifest.json)")
    seed: int = Field(0, ge=0, description="seed of every stochastic instrument")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="where the model runs")
    batch_size: int = Field(16, ge=1, description="cases per unit of work, and the most model inputs in one forward of any "
                            "instrument (perturbations and deletion steps are chunked to it)")
    num_workers: int = Field(0, ge=0, description="threads reading the cohort's files (0: one after another)")

    @field_validator("instruments", mode="before")
    @classmethod
    def _instruments(cls, v: Any) -> Any:
        from audit.run.plugin import close_names, registry

        INSTRUMENTS = registry()
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError(f"must be a mapping of instrument names, got {type(v).__name__}")
        for name in v:
            if name not in INSTRUMENTS:
                raise ValueError(f"unknown instrument {name!r}{close_names(name, INSTRUMENTS)}; "
                                 f"known: {', '.join(INSTRUMENTS)}")
        return v

    def instrument_params(self) -> dict[str, BaseModel]:
        """Every enabled instrument with its validated parameters (defaults where not configured)."""
        from audit.run.plugin import registry

        INSTRUMENTS = registry()
        out: dict[str, BaseModel] = {}
        problems: list[str] = []
        for name, inst in INSTRUMENTS.items():
            raw = self.instruments.get(name, inst.default_on)
            if raw is False or raw is None:
                continue
            try:
                out[name] = inst.params.model_validate({} if raw is True else raw)
            except ValidationError as err:
                problems += _lines(err, f"instruments.{name}")
        if problems:
            raise ConfigError(problems)
        return out

    def config_hash(self) -> str:
        """sha256 (16 hex digits) of the configuration as JSON, keys sorted."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _lines(err: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "literal_error":
            allowed = e.get("ctx", {}).get("expected", "").replace("'", "").replace(" or ", ", ")
            msg = f"is not one of {allowed}"
        elif e["type"] == "extra_forbidden":
            msg = "is not a known key"
        elif e["type"] == "missing":
            msg = "is required"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f"{got!r} "
        out.append(f"{loc}: {shown}{msg}")
    return out


def parse_config(data: Any, source: str = "config", base: Path | None = None) -> RunConfig:
    """Validate a mapping as a :class:`RunConfig`; relative paths resolve against ``base``.

    Raises:
        ConfigError: one line per mistake, each naming its key.
    """
    if not isinstance(data, dict):
        raise ConfigError([f"the file must hold a mapping of sections (model, cohort, ...), got "
                           f"{type(data).__name__}"], source)
    try:
        cfg = RunConfig.model_validate(data)
        cfg.instrument_params()
    except ValidationError as err:
        raise ConfigError(_lines(err), source) from None
    except ConfigError as err:
        raise ConfigError(err.problems, source) from None
    if base is not None:
        cfg = _resolve(cfg, base)
    return cfg


def _resolve(cfg: RunConfig, base: Path) -> RunConfig:
    def rel(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else base / p

    model = cfg.model.model_copy(update={"path": rel(cfg.model.path) or cfg.model.path})
    cohort = cfg.cohort.model_copy(update={"manifest": rel(cfg.cohort.manifest) or cfg.cohort.manifest,
                                           "folder": rel(cfg.cohort.folder) or cfg.cohort.folder})
    return cfg.model_copy(update={"model": model, "cohort": cohort, "out": rel(cfg.out) or cfg.out})


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config; relative paths in it are relative to its folder.

    Raises:
        ConfigError: the file is missing, is not YAML, or has mistakes (one line each).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"], str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}".replace("\n", " ")], str(path)) from None
    return parse_config(data, str(path), base=path.parent)
