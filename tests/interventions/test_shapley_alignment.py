"""The alignment diagnostic of marginal fill: donors vs recipients, on poses with known alignment."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from audit.synthetic import SyntheticConfig, make_cohort
from probes.interventions import ALIGNMENT_MIN_DICE, MisalignedDonorsWarning, contrast_shapley
from probes.interventions.alignment import donor_alignment
from tests.helpers import timm_model


def test_donor_alignment_closed_form():
    """Two 4×4 squares shifted by one column: Dice 2·12/32 = 0.75; the same square: 1."""
    a = np.zeros((2, 8, 8), bool)
    a[0, 2:6, 2:6] = True
    a[1, 2:6, 3:7] = True
    x = torch.zeros(2, 1, 8, 8)
    assert donor_alignment(x, np.array([[1, 0]]), a) == (0.75, "brain mask")
    b = np.repeat(a[:1], 2, 0)
    assert donor_alignment(x, np.array([[1, 0]]), b) == (1.0, "brain mask")
    # the image proxy: the same squares drawn as bright voxels
    assert donor_alignment(torch.from_numpy(a[:, None].astype(np.float32)), np.array([[1, 0]]))[0] == 0.75


@pytest.fixture(scope="module")
def r18():
    return timm_model("resnet18")


@pytest.mark.parametrize("use_brain", [True, False], ids=["brain mask", "image foreground"])
def test_random_pose_is_flagged_and_atlas_pose_is_not(r18, use_brain):
    """Random poses fall below the threshold (measured median brain Dice ≈ 0.90, foreground ≈ 0.92);
    atlas-posed heads lie above it (≈ 0.99), with no warning; the value is in the result's tables."""
    out = {}
    for pose in ("random", "atlas"):
        co = make_cohort(SyntheticConfig(n_cases=12, size=48, seed=3, pose=pose))
        s = co.stack()
        masks = {"brain": s["masks"]["brain"]} if use_brain else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = contrast_shapley(r18, s["image"], 1, "prob", absent="marginal", masks=masks, n_samples=2, seed=0)
        flagged = [w for w in caught if issubclass(w.category, MisalignedDonorsWarning)]
        table = res.tables()["alignment"]
        assert table.metric.tolist() == ["donor_alignment_dice"]
        assert table.value.iloc[0] == pytest.approx(res.alignment)
        assert res.alignment_source == ("brain mask" if use_brain else "image foreground")
        out[pose] = (res.alignment, len(flagged))
    assert out["random"][0] < ALIGNMENT_MIN_DICE and out["random"][1] == 1
    assert out["atlas"][0] > ALIGNMENT_MIN_DICE and out["atlas"][1] == 0
    assert out["atlas"][0] - out["random"][0] > 0.04


def test_zero_fill_reports_no_alignment(r18):
    x = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    res = contrast_shapley(r18, x, 1, "prob", absent="zero")
    assert np.isnan(res.alignment) and "alignment" not in res.tables()
