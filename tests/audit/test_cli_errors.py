"""The command line never shows a traceback for a user error: one red line, exit code 2.

Damaged or unsupported files, bad option values and unreadable CSVs each give exactly one
``error:`` line naming the file or the option; an internal error writes its traceback to a log
file, says where, and exits with 3.
"""

from __future__ import annotations

import re

import pytest
import timm
from typer.testing import CliRunner

from audit import cli
from audit.models import save_state_dict


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("damaged")
    model = timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=2)
    ok = save_state_dict(model, d / "ok.safetensors")
    raw = ok.read_bytes()
    (d / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    (d / "empty.safetensors").write_bytes(b"")
    pt = save_state_dict(model, d / "ok.pt")
    (d / "trunc.pt").write_bytes(pt.read_bytes()[:1000])
    (d / "text.pt").write_text("not a checkpoint, just words")
    (d / "corrupt.onnx").write_bytes(b"\x08\x07garbage\xff\xfe" * 10)
    (d / "weights.h5").write_bytes(b"\x89HDF")
    (d / "empty.csv").write_text("")
    (d / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (d / "header_only.csv").write_text("reader,case,truth,phase\n")
    (d / "folder").mkdir()
    return d


CASES = [  # (argv, what the one line must name)
    (["verify", "{d}/empty.safetensors", "--arch", "resnet18"], "empty.safetensors"),
    (["verify", "{d}/trunc.safetensors", "--arch", "resnet18"], "trunc.safetensors"),
    (["verify", "{d}/text.pt", "--arch", "resnet18"], "text.pt"),
    (["verify", "{d}/trunc.pt", "--arch", "resnet18"], "trunc.pt"),
    (["verify", "{d}/corrupt.onnx"], "corrupt.onnx"),
    (["verify", "{d}/weights.h5", "--arch", "resnet18"], "weights.h5"),
    (["verify", "{d}/missing.pt", "--arch", "resnet18"], "missing.pt"),
    (["verify", "{d}/folder"], "model_card.json"),
    (["verify", "{d}/ok.safetensors", "--arch", "resnet1800"], "resnet1800"),
    (["verify", "{d}/ok.safetensors", "--arch", "resnet18", "--shape", "64,x"], "--shape"),
    (["verify", "{d}/ok.safetensors", "--arch", "resnet18", "--shape", "0,64"], "--shape"),
    (["verify", "{d}/ok.safetensors", "--arch", "resnet18", "--shape", "64,64,64,64"], "--shape"),
    (["readers", "{d}/empty.csv", "--out", "{d}/out"], "empty.csv"),
    (["readers", "{d}/binary.csv", "--out", "{d}/out"], "binary.csv"),
    (["readers", "{d}/header_only.csv", "--out", "{d}/out"], "header_only.csv"),
    (["readers", "{d}/missing.csv", "--out", "{d}/out"], "missing.csv"),
    (["readers", "--example", "--out", "{d}/out", "--n-boot", "1"], "--n-boot"),
]


@pytest.mark.parametrize("argv, names", CASES, ids=[" ".join(a[:2]).split("/")[-1] + f"-{i}" for i, (a, _) in
                                                     enumerate(CASES)])
def test_user_error_is_one_line_and_exit_2(files, argv, names):
    res = CliRunner().invoke(cli.app, [a.format(d=files) for a in argv])
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), out
    assert names in lines[0], out


def test_internal_error_points_to_its_log(files, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDAUDIT_CACHE", str(tmp_path))

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("audit.readers.analyze_reads", broken)
    res = CliRunner().invoke(cli.app, ["readers", "--example", "--out", str(files / "out2")])
    assert res.exit_code == 3, res.output
    assert "Traceback" not in res.output and "internal error" in res.output
    log = re.search(r"traceback is in (\S+\.log)", " ".join(res.output.split())).group(1)
    text = open(log, encoding="utf-8").read()
    assert "Traceback" in text and "ZeroDivisionError: a bug" in text
