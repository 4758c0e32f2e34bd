"""The kit every fuzz row builds its valid call from: a small model, inputs, maps, masks, labels.

Everything is deterministic and small (ResNet-18 on 4 × 4 × 32 × 32) so that the whole matrix
runs in a few minutes on two cores. Rows copy what they mutate; the kit itself is never changed
(``test_kit_unchanged`` in ``test_coverage.py`` checks it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import timm_model


def make_kit() -> dict[str, Any]:
    """The valid inputs, keyed by kind (see ``tests/fuzz/harness.py``)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 32, 32, generator=g)
    maps = torch.rand(4, 1, 32, 32, generator=g)
    gtv = np.zeros((4, 32, 32), bool)
    gtv[:, 8:16, 10:18] = True
    skull = np.zeros((4, 32, 32), bool)
    skull[:, :3, :] = True
    skull[:, -3:, :] = True
    labels = np.array([0, 1, 0, 1])
    return {
        "model": timm_model("resnet18"),  # eval mode, random BatchNorm statistics
        "x": x,
        "x_base": torch.randn(4, 4, 32, 32, generator=g),
        "target": 1,
        "maps": maps,
        "masks": {"gtv": gtv, "skull": skull},
        "mask": gtv,
        "labels": labels,
        "scores": np.array([0.2, 0.7, 0.4, 0.9]),
        "case_ids": ["c0", "c1", "c2", "c3"],
        "channel_names": ["T1", "T1c", "T2", "FLAIR"],
        "point": "layer1.0.resid",
    }


@pytest.fixture(scope="session")
def kit() -> dict[str, Any]:
    return make_kit()
