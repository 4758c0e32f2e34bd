"""``audit init``: commented example configs, generated from the pydantic models themselves.

Every key of :class:`~audit.run.config.RunConfig` is written with its description as a comment
and its default (or the template's value); every registered instrument is listed with its
docstring and its parameters' defaults. Documentation and validation come from one source, so
they cannot drift: a test validates each template with :func:`~audit.run.config.parse_config`.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from pydantic import BaseModel

from audit.run.config import CohortSpec, ModelSpec, PreprocessSpec, RunConfig

__all__ = ["TEMPLATES", "render_template"]

# what each template sets beyond the defaults, by section
TEMPLATES: dict[str, dict[str, dict[str, Any]]] = {
    "demo": {
        "model": {"arch": "resnet18", "arch_kwargs": {"channels": [16, 32, 64, 128]},
                  "train": {"epochs": 10, "seed": 0}, "class_names": ["round", "irregular"]},
        "cohort": {"source": "synthetic", "synthetic": {"n_cases": 1500, "size": 128, "q1": 0.9, "q0": 0.1},
                   "counterfactuals": ["t1c_only", "no_marker"]},
    },
    "nifti": {
        "model": {"path": "model.safetensors", "arch": "resnet18", "in_chans": 4, "num_classes": 2},
        "cohort": {"source": "manifest", "manifest": "cohort/manifest.csv", "channels": ["T1", "T1c", "T2", "FLAIR"],
                   "rois": ["gtv", "skull"]},
        "preprocess": {"normalize": "zscore_brain", "resize": [128, 128]},
    },
    "onnx": {
        "model": {"path": "model.onnx", "input_layout": "NHWC", "output": "probabilities",
                  "class_names": ["no tumour", "tumour"]},
        "cohort": {"source": "images", "folder": "images/", "split": None},
        "preprocess": {"normalize": "minmax", "resize": [224, 224]},
    },
    "3d": {
        "model": {"path": "model.pt", "arch": "monai:resnet10", "in_chans": 4, "num_classes": 2,
                  "input_layout": "NCDHW"},
        "cohort": {"source": "manifest", "manifest": "cohort/manifest.csv", "max_cases": 16},
        "preprocess": {"normalize": "zscore_brain", "crop": [96, 96, 96]},
    },
}

_SECTIONS: dict[str, type[BaseModel]] = {"model": ModelSpec, "cohort": CohortSpec, "preprocess": PreprocessSpec}


def _yaml(v: Any) -> str:
    if isinstance(v, BaseModel):
        v = v.model_dump(mode="json")
    if hasattr(v, "__fspath__"):
        v = str(v)
    return json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else json.dumps(v)


def _comment(text: str, indent: str) -> list[str]:
    text = " ".join(text.replace("``", "").split())
    return [f"{indent}# {line}" for line in textwrap.wrap(text, 96 - len(indent))] if text else []


def _section(name: str, model: type[BaseModel], values: dict[str, Any]) -> list[str]:
    lines = _comment(model.__doc__ or "", "") + [f"{name}:"]
    for key, f in model.model_fields.items():
        lines += _comment(f.description or "", "  ")
        if key in values:
            lines.append(f"  {key}: {_yaml(values[key])}")
        else:
            default = f.get_default(call_default_factory=True)
            prefix = "# " if default is None else ""  # optional keys: shown, commented out
            lines.append(f"  {prefix}{key}: {_yaml(default)}")
    return lines


def _instruments() -> list[str]:
    from audit.run.plugin import registry

    lines = _comment(f"Instruments: {RunConfig.model_fields['instruments'].description}.", "") + ["instruments:"]
    for name, inst in registry().items():
        lines += _comment(inst.doc, "  ") + _comment(inst.params.__doc__ or "", "  ")
        params = inst.params()
        fields = params.model_dump(mode="json")
        if not fields or not inst.default_on:
            lines.append(f"  {name}: {'true' if inst.default_on else 'false'}")
            continue
        lines.append(f"  {name}:")
        lines += [f"    {k}: {_yaml(v)}" for k, v in fields.items()]
    return lines


def render_template(name: str = "demo") -> str:
    """The commented YAML config of template ``name`` (one of :data:`TEMPLATES`)."""
    if name not in TEMPLATES:
        from probes.core.errors import OptionError

        raise OptionError("--template", name, f"one of {', '.join(TEMPLATES)}")
    t = TEMPLATES[name]
    out = [f"# medaudit audit-run configuration ({name} template), written by `audit init --template {name}`.",
           "# Run it with: audit run <this file>. Relative paths are relative to this file's folder.", ""]
    for sec, model in _SECTIONS.items():
        out += _section(sec, model, t.get(sec, {})) + [""]
    out += _instruments() + [""]
    for key, f in RunConfig.model_fields.items():
        if key in _SECTIONS or key == "instruments":
            continue
        out += _comment(f.description or "", "")
        out.append(f"{key}: {_yaml(t.get('run', {}).get(key, f.get_default(call_default_factory=True)))}")
    return "\n".join(out) + "\n"
