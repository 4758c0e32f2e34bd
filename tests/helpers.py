"""Helpers shared by the tests: random-init models with non-trivial BatchNorm, reference data."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# Published reference data sets (sources, citations and licences: tests/data/README.md).
READERSTUDY_DATA = Path(__file__).resolve().parent / "data" / "readerstudy"


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine terms, so f(x) != 0 and every block does something.

    timm's untrained ResNets zero the last BN of each branch (``zero_init_last``); a hook that
    captured the wrong tensor could then still look right. Random statistics rule that out.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.2 + 1.0)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def timm_model(name: str, **kw) -> nn.Module:
    import timm

    kw = {"pretrained": False, "in_chans": 4, "num_classes": 2, "zero_init_last": False, **kw}
    torch.manual_seed(0)
    return randomize_bn(timm.create_model(name, **kw)).eval()
