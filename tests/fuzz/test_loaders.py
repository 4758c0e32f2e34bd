"""Bad inputs for the loaders: checkpoints (``audit.models``), cohorts, manifests and 2-D image
files (``audit.data``) and atlas ROIs (``audit.data.atlas``).

A damaged file (an empty or truncated ``.safetensors``, text named ``.pt``, a corrupt
``.onnx``, an unreadable manifest CSV, text named ``.png``) raises an ``AuditInputError`` — ``CheckpointReadError``
or ``ManifestError`` — whose ``name`` is the argument and whose message names the file. Files
are written under a per-module pytest temporary folder.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import timm
import torch

from audit.data import (Case, Cohort, CohortDataset, ManifestError, collate, read_images, read_manifest,
                        slices_from_volumes, write_nifti)
from audit.data.atlas import AtlasResult, add_atlas_rois, atlas_rois, intensity_mask, qc_figure
from audit.models import CheckpointReadError, as_audit_model, load_model, save_state_dict
from PIL import Image

from probes.core.errors import AuditInputError
from tests.fuzz.harness import Bad, Row, params, run_case

_TMP: list = []


@pytest.fixture(scope="module", autouse=True)
def _workdir(tmp_path_factory):
    _TMP[:] = [tmp_path_factory.mktemp("fuzz_loaders")]
    yield
    _TMP.clear()


def _dir(name: str):
    d = _TMP[0] / name
    d.mkdir(exist_ok=True)
    return d


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=2).eval()


def _checkpoint():
    path = _dir("ckpt") / "ok.safetensors"
    if not path.exists():
        save_state_dict(_net(), path)
    return path


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([v.detach().double().reshape(-1) for v in model.state_dict().values() if v.is_floating_point()])


def _damaged(name: str, content):
    def make(path):
        out = path.parent / name
        out.write_bytes(content(path.read_bytes()))
        return out
    return make


CHECKPOINTS = [
    Bad("an empty .safetensors", _damaged("empty.safetensors", lambda raw: b""), "error"),
    Bad("a truncated .safetensors", _damaged("trunc.safetensors", lambda raw: raw[: len(raw) // 2]), "error"),
    Bad("text named .pt", _damaged("text.pt", lambda raw: b"not a checkpoint, just words"), "error"),
    Bad("a truncated .pt", _damaged("trunc.pt", lambda raw: raw[:1000]), "error"),
    Bad("a corrupt .onnx", _damaged("corrupt.onnx", lambda raw: b"\x08\x07garbage\xff\xfe" * 10), "error"),
    Bad("an unsupported extension", _damaged("weights.h5", lambda raw: b"\x89HDF"), "error"),
    Bad("a str path", lambda p: str(p), "same"),
]


# ------------------------------------------------------------------------------ cohorts
def _cohort2d(n: int = 2) -> Cohort:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        gtv = np.zeros((8, 8), bool)
        gtv[2:5, 3:6] = True
        cases.append(Case(f"c{i}", rng.random((2, 8, 8)).astype(np.float32), ("T1", "T2"), label=i % 2,
                          masks={"gtv": gtv}))
    return Cohort(cases)


def _cohort3d() -> Cohort:
    rng = np.random.default_rng(1)
    gtv = np.zeros((4, 8, 8), bool)
    gtv[1:3, 2:5, 2:5] = True
    return Cohort([Case("v0", rng.random((1, 4, 8, 8)).astype(np.float32), ("T1",), label=1, masks={"gtv": gtv})])


def _manifest():
    path = _dir("nifti") / "manifest.csv"
    if not path.exists():
        write_nifti(_cohort2d(), path.parent)
    return path


def _edited(name: str, edit):
    def make(path):
        out = path.parent / name
        out.write_text(edit(path.read_text()))
        return out
    return make


def _drop_column(text: str, col: str) -> str:
    rows = [ln.split(",") for ln in text.splitlines()]
    k = rows[0].index(col)
    return "\n".join(",".join(r[:k] + r[k + 1:]) for r in rows) + "\n"


def _set_cell(text: str, col: str, value: str) -> str:
    rows = [ln.split(",") for ln in text.splitlines()]
    rows[1][rows[0].index(col)] = value
    return "\n".join(",".join(r) for r in rows) + "\n"


MANIFESTS = [
    Bad("a missing case_id column", _edited("no_id.csv", lambda t: _drop_column(t, "case_id")), "error"),
    Bad("an empty case_id cell", _edited("empty_id.csv", lambda t: _set_cell(t, "case_id", "")), "error"),
    Bad("a label that is not an integer", _edited("label.csv", lambda t: _set_cell(t, "label", "abc")), "error"),
    Bad("an empty image cell", _edited("no_image.csv", lambda t: _set_cell(t, "image_T1", "")), "error"),
    Bad("an empty file", _edited("empty.csv", lambda t: ""), "error"),
    Bad("binary bytes", _damaged("binary.csv", lambda raw: bytes(range(256)) * 4), "error"),
    Bad("a header only", _edited("header.csv", lambda t: t.splitlines()[0] + "\n"), "ok"),
]


# ------------------------------------------------------------------------- 2-D image files
_CLASSES = ("benign", "malignant")


def _png(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8), "L").save(path)


def _png_folder():
    """``png/classes/<class>/<image>.png``: two classes of two 8×8 grey PNGs (ImageFolder layout)."""
    root = _dir("png") / "classes"
    if not root.exists():
        for i, cls in enumerate(_CLASSES):
            for j in range(2):
                _png(root / cls / f"{cls[0]}{j}.png", 10 * i + j)
    return root


def _png_csv():
    """``png/cases.csv``: the same images, one row each, paths relative to the CSV, class names as labels."""
    path = _dir("png") / "cases.csv"
    if not path.exists():
        root = _png_folder()
        lines = ["path,label"] + [f"{p.relative_to(path.parent).as_posix()},{p.parent.name}"
                                  for p in sorted(root.rglob("*.png"))]
        path.write_text("\n".join(lines) + "\n")
    return path


def _text_png(text: str) -> str:
    """Point the first row at a text file named ``text.png``."""
    (_TMP[0] / "png" / "text.png").write_text("not an image, just words\n")
    return _set_cell(text, "path", "text.png")


def _folder_of(name: str, classes: tuple[str, ...]):
    def make(folder):
        out = folder.parent / name
        for i, cls in enumerate(classes):
            _png(out / cls / "x0.png", 100 + i)
        out.mkdir(exist_ok=True)
        return out
    return make


IMAGE_MANIFESTS = [
    Bad("a missing file", lambda p: p.parent / "absent.csv", "error"),
    Bad("a row whose image file is missing",
        _edited("gone.csv", lambda t: _set_cell(t, "path", "classes/benign/gone.png")), "error"),
    Bad("an unknown label name", _edited("label_name.csv", lambda t: _set_cell(t, "label", "bening")), "error"),
    Bad("text named .png", _edited("text_png.csv", _text_png), "error"),
    Bad("an empty file", _edited("empty.csv", lambda t: ""), "error"),
    Bad("a header only", _edited("header.csv", lambda t: t.splitlines()[0] + "\n"), "ok"),
    Bad("a str path", lambda p: str(p), "same"),
]
IMAGE_FOLDERS = [
    Bad("one class only", _folder_of("one_class", ("benign",)), "error"),
    Bad("an empty folder", _folder_of("no_class", ()), "error"),
    Bad("a missing folder", lambda f: f.parent / "absent", "error"),
    Bad("a str path", lambda f: str(f), "same"),
]


def _images(cohort: Cohort) -> torch.Tensor:
    return torch.as_tensor(np.stack([c.image for c in cohort])) if len(cohort) else torch.zeros(0)


def _written(kw) -> torch.Tensor:
    folder = _dir("written") / f"w{len(list(_dir('written').iterdir()))}"
    return _images(read_manifest(write_nifti(kw["cohort"], folder)))


def _batch(k) -> dict:
    ds = CohortDataset(_cohort2d(3))
    return {"batch": [ds[i] for i in range(3)]}


def _atlas_case() -> Case:
    rng = np.random.default_rng(2)
    return Case("a0", rng.random((1, 12, 12, 12)).astype(np.float32), ("T1",))


def _atlas_result(case: Case) -> AtlasResult:
    brain = np.zeros(case.spatial_shape, bool)
    brain[3:9, 3:9, 3:9] = True
    return AtlasResult(case.case_id, "T1", {"brain": brain}, {"flagged": False, "qc_reference": "head",
                                                               "dice_vs_intensity_mask": 0.9}, brain.copy())


def _figure(kw) -> torch.Tensor:
    import matplotlib.pyplot as plt

    fig = qc_figure(kw["case"], kw["result"])
    plt.close(fig)
    return torch.zeros(1)


def _warnless(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a constant test image warns about its masks
        return fn()


CASES = [
    Bad("not a Case", lambda c: c.image, "error"),
    Bad("a 2-D case", lambda c: _warnless(lambda: Case("flat2d", c.image[:, 0], c.channels)), "error"),
    Bad("too small to register", lambda c: Case("tiny", c.image[:, :4, :4, :4].copy(), c.channels), "error"),
    Bad("a constant channel", lambda c: Case("const", np.ones_like(c.image), c.channels), "error"),
]

ROWS: list[Row] = [
    Row("audit.models.load_model", build=lambda k: {"path": _checkpoint(), "arch": "resnet18"},
        call=lambda kw: _weights(load_model(kw["path"], kw["arch"])), args={"path": CHECKPOINTS}),
    Row("audit.models.save_state_dict", build=lambda k: {"model": k["model"], "path": _dir("saved") / "m.safetensors"},
        call=lambda kw: _weights(load_model(save_state_dict(kw["model"], kw["path"]), "resnet18")),
        args={"model": "model", "path": [Bad("an unsupported extension", lambda p: p.with_suffix(".h5"), "error"),
                                         Bad("a .pt file", lambda p: p.with_suffix(".pt"), "same"),
                                         Bad("a str path", lambda p: str(p), "same"),
                                         Bad("not a path", lambda p: 3, "error")]},
        skip=frozenset({("model", "in training mode")}),
        why={("model", "in training mode"): "saves the weights; the model is not run, so its mode does not matter"}),
    Row("audit.models.as_audit_model", build=lambda k: {"model": k["model"], "output": None},
        call=lambda kw: as_audit_model(kw["model"], kw["output"]),
        args={"output": [Bad("probabilities", lambda o: "probabilities", "ok"),
                         Bad("a callable", lambda o: (lambda out: torch.softmax(out, 1)), "ok")]}),
    Row("audit.data.read_manifest", build=lambda k: {"csv_path": _manifest()},
        call=lambda kw: _images(read_manifest(kw["csv_path"])), args={"csv_path": MANIFESTS},
        why={("csv_path", "a header only"): "a manifest without rows is an empty cohort"}),
    Row("audit.data.read_images", build=lambda k: {"manifest": _png_csv(), "class_names": _CLASSES},
        call=lambda kw: _images(read_images(manifest=kw["manifest"], class_names=kw["class_names"])),
        args={"manifest": IMAGE_MANIFESTS},
        why={("manifest", "a header only"): "a manifest without rows is an empty cohort"}),
    Row("audit.data.read_images", build=lambda k: {"folder": _png_folder()},
        call=lambda kw: _images(read_images(folder=kw["folder"])), args={"folder": IMAGE_FOLDERS}),
    Row("audit.data.write_nifti", build=lambda k: {"cohort": _cohort2d()}, call=_written,
        args={"cohort": [Bad("not a Cohort", lambda c: list(c), "error"),
                         Bad("an empty cohort", lambda c: Cohort(), "error"),
                         Bad("one case", lambda c: c.subset([c.case_ids[0]]), "ok")]}),
    Row("audit.data.collate", build=_batch, call=lambda kw: collate(kw["batch"])["image"],
        args={"batch": [Bad("images of different shapes",
                            lambda b: [b[0], {**b[1], "image": b[1]["image"][:, :4]}, b[2]], "error"),
                        Bad("empty", lambda b: [], "error"),
                        Bad("not dataset items", lambda b: [it["image"] for it in b], "error"),
                        Bad("a tuple", lambda b: tuple(b), "same")]}),
    Row("audit.data.slices_from_volumes", build=lambda k: {"cohort3d": _cohort3d(), "axis": 0},
        call=lambda kw: _images(slices_from_volumes(kw["cohort3d"], kw["axis"])),
        args={"cohort3d": [Bad("a 2-D cohort", lambda c: _cohort2d(), "error"),
                           Bad("not a Cohort", lambda c: list(c), "error"),
                           Bad("an empty cohort", lambda c: Cohort(), "ok")],
              "axis": [Bad("3", lambda a: 3, "error"), Bad("a float", lambda a: 0.0, "error"),
                       Bad("-3", lambda a: -3, "same")]}),
    Row("audit.data.atlas.intensity_mask", build=lambda k: {"img": _atlas_case().channel("T1")},
        call=lambda kw: torch.as_tensor(intensity_mask(kw["img"])).double(),
        args={"img": [Bad("a NaN voxel", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a),
                          "error"),
                      Bad("an Inf voxel", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.inf, a),
                          "error"),
                      Bad("an object array", lambda a: np.array([object()] * 4), "error"),
                      Bad("constant", lambda a: np.ones_like(a), "ok"),
                      Bad("float64", lambda a: a.astype(np.float64), "same"),
                      Bad("a tensor", lambda a: torch.as_tensor(a), "same")]},
        why={("img", "constant"): "a constant image has no foreground: the mask is empty (a mask, not a number)"}),
    Row("audit.data.atlas.atlas_rois", build=lambda k: {"case": _atlas_case(), "qc_threshold": 0.85},
        call=lambda kw: atlas_rois(kw["case"], qc_threshold=kw["qc_threshold"]),
        args={"case": CASES, "qc_threshold": [Bad("above 1", lambda q: 1.5, "error"),
                                              Bad("negative", lambda q: -0.1, "error")]}),
    Row("audit.data.atlas.add_atlas_rois", build=lambda k: {"cohort": Cohort([_atlas_case()])},
        call=lambda kw: add_atlas_rois(kw["cohort"], raise_errors=True)[1],
        args={"cohort": [Bad("a list of cases", lambda c: list(c), "error"),
                         Bad("a Case", lambda c: c[0], "error"),
                         Bad("an empty cohort", lambda c: Cohort(), "ok")]}),
    Row("audit.data.atlas.qc_figure", build=lambda k: {"case": _atlas_case(), "result": _atlas_result(_atlas_case())},
        call=_figure,
        args={"result": [Bad("for another case", lambda r: AtlasResult("other", r.channel, r.masks, r.qc), "error"),
                         Bad("a mask of another shape",
                             lambda r: AtlasResult(r.case_id, r.channel, {"brain": r.masks["brain"][1:]}, r.qc),
                             "error"),
                         Bad("without an intensity mask",
                             lambda r: AtlasResult(r.case_id, r.channel, r.masks, r.qc), "ok")]}),
]
EXEMPT: dict[str, str] = {
    "audit.models.model_interface": "re-export of probes.core.model_interface: reads the model's declared "
                                    "interface attribute; no case data",
}


@pytest.mark.parametrize("row,arg,bad,expect", params(ROWS))
def test_bad_input(row, arg, bad, expect, kit):
    run_case(row, arg, bad, expect, kit)


# ----------------------------------------------------------------------- the examples
@pytest.mark.parametrize("bad", [b for b in CHECKPOINTS if b.expect == "error"], ids=lambda b: b.label)
def test_a_damaged_checkpoint_is_a_checkpoint_read_error_naming_the_file(bad):
    path = bad.mutate(_checkpoint())
    with pytest.raises(CheckpointReadError) as info:
        load_model(path, "resnet18")
    err = info.value
    assert isinstance(err, AuditInputError) and isinstance(err, ValueError)
    assert err.name == "path" and err.got == str(path) and path.name in str(err)
    assert not str(err).startswith("path:")  # the message names the file, as before


@pytest.mark.parametrize("bad", [b for b in MANIFESTS if b.expect == "error"], ids=lambda b: b.label)
def test_a_bad_manifest_is_a_manifest_error_naming_the_file(bad):
    path = bad.mutate(_manifest())
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    err = info.value
    assert isinstance(err, AuditInputError) and err.name == "csv_path" and str(path) in str(err)


def test_a_missing_manifest_column_is_in_got():
    path = _edited("no_id2.csv", lambda t: _drop_column(t, "case_id"))(_manifest())
    with pytest.raises(ManifestError, match=r"no column 'case_id'") as info:
        read_manifest(path)
    assert info.value.got == "case_id"
