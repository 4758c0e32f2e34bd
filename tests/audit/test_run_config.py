"""`audit run` configuration: every kind of mistake gives one line naming its key, never a traceback;
`audit init` templates are generated from the models and validate."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from audit.cli import app
from audit.run.config import ConfigError, parse_config
from audit.run.templates import TEMPLATES, render_template

TINY = {"arch": "resnet18", "arch_kwargs": {"channels": [8, 16, 32, 64]}, "num_classes": 2, "in_chans": 4}
COHORT = {"source": "synthetic", "synthetic": {"n_cases": 12, "size": 32, "seed": 1}, "max_cases": 4}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from audit.models import load_model, save_state_dict

    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_state_dict(load_model(None, TINY["arch"], num_classes=2, in_chans=4, **TINY["arch_kwargs"]), path)
    return path


def _config(**edits):
    cfg = {"model": dict(TINY), "cohort": dict(COHORT), "instruments": {"predictions": True}}
    for dotted, value in edits.items():
        node, *path, last = dotted.split("__")
        d = cfg.setdefault(node, {})
        for k in path:
            d = d.setdefault(k, {})
        d[last] = value
    return cfg


# (id, config edits, what the single message must contain: the key, the value, what is allowed)
MISTAKES = [
    ("unknown instrument", {"instruments__gradcamm": True}, ["instruments", "'gradcamm'", "did you mean 'gradcam'"]),
    ("wrong type", {"run__batch_size": "many"}, ["batch_size", "'many'", "integer"]),
    ("not one of", {"model__output": "prob"}, ["model.output", "'prob'", "is not one of logits, probabilities"]),
    ("unknown key", {"model__weights": "x.pt"}, ["model.weights", "is not a known key"]),
    ("missing model file", {"model__path": "missing.safetensors"}, ["model.path", "file not found", "missing.safetensors"]),
    ("unknown ROI", {"cohort__rois": ["tumour"]}, ["cohort.rois", "'tumour'", "gtv"]),
    ("channel count", {"model__in_chans": 3}, ["cohort.channels", "4 channel(s)", "takes 3"]),
    ("layout vs model", {"model__input_layout": "NCDHW"}, ["model.input_layout", "'NCDHW'", "NCHW or NHWC"]),
    ("channels-last layout the model cannot take", {"model__input_layout": "NHWC"},
     ["model.input_layout", "NHWC", "forward pass"]),
    ("instrument parameter", {"instruments__gradcam": {"q": "high"}}, ["instruments.gradcam.q", "'high'"]),
    ("unknown attribution method", {"instruments__attribution": {"methods": ["gradcma"]}},
     ["instruments.attribution.methods", "'gradcma'", "integrated_gradients"]),
    ("synthetic parameter", {"cohort__synthetic": {"size": 8}}, ["cohort.synthetic", "size", "8"]),
    ("unknown counterfactual", {"cohort__counterfactuals": ["no_lesion"]}, ["cohort.counterfactuals", "'no_lesion'", "t1c_only"]),
    ("positive class name", {"model__positive_class": "tumour"}, ["model.positive_class", "'tumour'", "irregular"]),
    ("manifest without a file", {"cohort__source": "manifest"}, ["cohort", "needs manifest"]),
    ("bad percentiles", {"preprocess__clip_percentiles": [99, 1]}, ["preprocess.clip_percentiles", "low < high"]),
]


@pytest.mark.parametrize("edits,needles", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_line_naming_its_key(tmp_path, edits, needles):
    cfg = _config(**{k: v for k, v in edits.items() if not k.startswith("run__")})
    cfg.update({k.removeprefix("run__"): v for k, v in edits.items() if k.startswith("run__")})
    cfg["out"] = str(tmp_path / "out")
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["run", str(path)])
    text = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    for needle in needles:
        assert needle in text, (needle, res.output)
    problems = [ln for ln in res.output.splitlines() if ln.startswith("  ")]
    assert len(problems) == 1, res.output  # one mistake, one line


def test_several_mistakes_are_listed_together():
    with pytest.raises(ConfigError) as err:
        parse_config({"model": {**TINY, "output": "prob", "colour": 1}, "batch_size": 0})
    keys = sorted(p.split(":")[0] for p in err.value.problems)
    assert keys == ["batch_size", "model.colour", "model.output"], err.value.problems


def test_a_file_that_is_not_yaml_or_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    res = CliRunner().invoke(app, ["run", str(bad)])
    assert res.exit_code == 2 and "not valid YAML" in res.output
    bad.write_text("- a list\n")
    res = CliRunner().invoke(app, ["run", str(bad)])
    assert res.exit_code == 2 and "mapping of sections" in res.output
    res = CliRunner().invoke(app, ["run", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "not found" in res.output


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_templates_validate_and_document_every_key(name):
    from audit.run.config import CohortSpec, ModelSpec, PreprocessSpec, RunConfig
    from audit.run.plugin import registry

    text = render_template(name)
    cfg = parse_config(yaml.safe_load(text), name)
    for key, value in TEMPLATES[name].get("model", {}).items():
        assert getattr(cfg.model, key) == value or str(getattr(cfg.model, key)) == value, key
    for model in (ModelSpec, CohortSpec, PreprocessSpec, RunConfig):  # every key and its description
        for key, f in model.model_fields.items():
            assert f"{key}:" in text, key
            if f.description:
                assert " ".join(f.description.split()[:4]) in " ".join(text.split()), key
    for inst in registry():
        assert f"  {inst}:" in text
    assert cfg.instrument_params().keys() == {k for k, i in registry().items() if i.default_on}


def test_init_cli_writes_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "a.yaml"
    res = CliRunner().invoke(app, ["init", "--template", "onnx", "--out", str(out)])
    assert res.exit_code == 0 and yaml.safe_load(out.read_text())["model"]["input_layout"] == "NHWC"
    res = CliRunner().invoke(app, ["init", "--template", "onnx", "--out", str(out)])
    assert res.exit_code == 2 and "exists" in res.output
    res = CliRunner().invoke(app, ["init", "--template", "mri"])
    assert res.exit_code == 2 and "--template" in res.output and "nifti" in res.output
    for cmd in ("run", "init", "demo", "verify", "readers"):
        assert "Example" in CliRunner().invoke(app, [cmd, "--help"]).output
