"""The `audit` console script: verify a saved checkpoint from the shell."""

from __future__ import annotations

import timm
from typer.testing import CliRunner

from audit.cli import app
from audit.io import save_state_dict

from .conftest import randomize_bn


def test_cli_verify_on_safetensors(tmp_path):
    model = randomize_bn(timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=2,
                                           zero_init_last=False))
    path = save_state_dict(model, tmp_path / "m.safetensors")
    res = CliRunner().invoke(app, ["verify", str(path), "--arch", "resnet18", "--shape", "32,32"])
    assert res.exit_code == 0, res.output
    assert "8 residual blocks" in res.output and "identity_patch" in res.output


def test_cli_refuses_unsafe_checkpoint_and_names_the_flag(tmp_path):
    import torch

    torch.save({"weights": torch.zeros(2), "fn": print}, tmp_path / "evil.pt")  # needs a GLOBAL
    res = CliRunner().invoke(app, ["verify", str(tmp_path / "evil.pt"), "--arch", "resnet18"])
    assert res.exit_code == 2
    assert "--trust-checkpoint" in res.output
