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


class NHWCNet(nn.Module):
    """conv → ReLU → conv (stride 2) → ReLU → mean → linear → head; NHWC in with ``channels_last``.

    ``head``: ``"softmax"`` (probabilities), ``"log_softmax"`` (log p) or ``"none"`` (logits).
    """

    def __init__(self, channels_last: bool = True, head: str = "softmax"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 4)
        self.channels_last, self.head = channels_last, head

    def forward(self, x):
        if self.channels_last:
            x = (x * 2.0).permute(0, 3, 1, 2)  # an element-wise op still in the NHWC layout
        else:
            x = x * 2.0
        h = torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3))
        z = self.fc(h)
        return {"softmax": lambda: torch.softmax(z, dim=1), "log_softmax": lambda: torch.log_softmax(z, dim=1),
                "none": lambda: z}[self.head]()


def export_nhwc_softmax(path: Path, seed: int = 0) -> tuple[Path, nn.Module]:
    """Export a seeded :class:`NHWCNet` (NHWC input, softmax output) to ONNX at ``path``."""
    import warnings

    torch.manual_seed(seed)
    net = NHWCNet().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        try:
            torch.onnx.export(net, (torch.randn(2, 16, 16, 3),), str(path), dynamo=False, opset_version=17)
        except Exception:  # legacy TorchScript exporter unavailable in this torch
            torch.onnx.export(net, (torch.randn(2, 16, 16, 3),), str(path), dynamo=True, opset_version=18)
    return path, net
