"""lime_map: batched N-D LIME, checked on toy models whose logit is a known function of segments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probes import ModelSnapshot
from probes.attribution.lime import lime_map



class RegionSum(nn.Module):
    """logit_1 = Σ x[:, channel] over ``region``, logit_0 = −logit_1: linear in the segment sums."""

    def __init__(self, region: torch.Tensor, channel: int):
        super().__init__()
        self.register_buffer("region", region.float())
        self.channel = channel
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so "left as found" means something
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.eval()

    def forward(self, x):
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        s = (x[:, self.channel] * self.region).flatten(1).sum(1) * self.scale
        return torch.stack([-s, s], dim=1)


def _grid(spatial, cells):
    """Block segments: each axis cut into ``cells`` equal parts, labels 0..cells^k − 1."""
    idx = torch.meshgrid(*[torch.arange(n) * cells // n for n in spatial], indexing="ij")
    lab = torch.zeros(spatial, dtype=torch.long)
    for i in idx:
        lab = lab * cells + i
    return lab


def _x(shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) + 0.5  # positive


def test_largest_weight_on_the_region_and_closed_form():
    seg = _grid((32, 32), 4)                      # 16 blocks of 8×8
    region = seg == 6
    model = RegionSum(region, channel=2)
    x = _x((2, 4, 32, 32))
    snap = ModelSnapshot.take(model)
    m = lime_map(model, x, 1, segments=seg, n_samples=400, batch_size=50).maps
    assert snap.diff(model) == []
    assert m.shape == (2, 1, 32, 32)
    for i in range(2):
        # painted: constant on each segment; the planted segment carries the largest weight
        assert (m[i, 0][region] == m[i, 0][region][0]).all()
        assert seg[m[i, 0].argmax() // 32, m[i, 0].argmax() % 32] == 6
        # response = z_6 · S with S the region sum: weighted ridge (alpha=1) gives w_6 ≈ S
        # (shrunk by a few % at 400 samples), every other weight ≈ 0
        s = float(x[i, 2][region].sum())
        assert m[i, 0][region][0].item() == pytest.approx(s, rel=0.05)
        others = m[i, 0][~region]
        assert others.abs().max() < 0.02 * s
    # the opposite class's logit is −S: its weight flips sign
    m0 = lime_map(model, x, [0, 0], segments=seg, n_samples=400).maps
    torch.testing.assert_close(m0, -m, rtol=1e-6, atol=1e-4)


def test_equals_lime_image_explainer_on_three_channels():
    """Same segments, seed, hide value and kernel: lime's own LimeImageExplainer (RGB only)."""
    import numpy as np
    from lime.lime_image import LimeImageExplainer

    seg = _grid((24, 24), 3)
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = _x((1, 3, 24, 24), seed=7).double()
    mine = lime_map(model, x, 1, segments=seg, n_samples=200, batch_size=32, seed=3, hide_value=0.0).maps

    def classifier_fn(imgs):
        with torch.no_grad():
            return model(torch.as_tensor(np.moveaxis(imgs, -1, 1))).numpy()

    exp = LimeImageExplainer(random_state=3).explain_instance(
        x[0].permute(1, 2, 0).numpy(), classifier_fn, labels=(1,), top_labels=None, hide_color=0,
        num_samples=200, batch_size=32, segmentation_fn=lambda img: seg.numpy())
    ref = np.zeros(int(seg.max()) + 1)
    for f, w in exp.local_exp[1]:
        ref[f] = w
    np.testing.assert_allclose(mine[0, 0].numpy(), ref[seg.numpy()], rtol=1e-5, atol=1e-6)
    assert np.abs(ref).max() > 1e-3


def test_per_contrast_finds_segment_and_channel():
    seg = _grid((32, 32), 4)
    region = seg == 9
    model = RegionSum(region, channel=3)
    x = _x((1, 4, 32, 32))
    m = lime_map(model, x, 1, segments=seg[None, None], per_contrast=True, n_samples=600).maps
    assert m.shape == (1, 4, 32, 32)
    flat = m[0].flatten()
    c, pos = divmod(int(flat.argmax()), 32 * 32)
    assert c == 3 and seg.flatten()[pos] == 9
    s = float(x[0, 3][region].sum())
    assert m[0, 3][region][0].item() == pytest.approx(s, rel=0.03)
    # the other contrasts of the same segment do not matter to the model
    assert m[0, :3][:, region].abs().max() < 0.03 * s


def test_slic_segments_deterministic_and_3d():
    # 3D, default SLIC supervoxels: a lesion-like cube, bright in every contrast, whose
    # channel-1 intensities the model sums
    x = _x((1, 4, 16, 16, 16), seed=3) * 0.1
    region = torch.zeros(16, 16, 16, dtype=torch.bool)
    region[2:8, 2:8, 2:8] = True
    x[0][:, region] += 2.0
    model = RegionSum(region, channel=1)
    a = lime_map(model, x, 1, n_segments=20, n_samples=300, seed=5).maps
    b = lime_map(model, x, 1, n_segments=20, n_samples=300, seed=5).maps
    c = lime_map(model, x, 1, n_segments=20, n_samples=300, seed=6).maps
    assert a.shape == (1, 1, 16, 16, 16)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the voxels with the largest weight lie in the planted cube
    top = a[0, 0] == a[0, 0].max()
    assert region[top].float().mean() > 0.9
    assert a[0, 0][region].mean() > 10 * a[0, 0][~region].abs().mean()


@pytest.mark.parametrize("n_samples,batch_size", [(1000, 50), (130, 64)])
def test_batched_model_calls(n_samples, batch_size):
    seg = _grid((16, 16), 2)
    model = RegionSum(seg == 1, channel=0)
    x = _x((2, 4, 16, 16))
    lime_map(model, x, 1, segments=seg, n_samples=n_samples, batch_size=batch_size)
    per_image = math.ceil(n_samples / batch_size)
    assert model.calls == 2 * per_image
    assert max(model.batch_sizes) == batch_size and sum(model.batch_sizes) == 2 * n_samples


def test_no_grad_and_model_left_as_found():
    seg = _grid((16, 16), 2)
    model = RegionSum(seg == 1, channel=0)
    seen = []
    model.register_forward_hook(lambda m, a, o: seen.append(torch.is_grad_enabled()))
    snap = ModelSnapshot.take(model)
    lime_map(model, _x((1, 4, 16, 16)), 1, segments=seg, n_samples=20)
    assert seen and not any(seen)
    assert snap.diff(model) == []


def test_bad_arguments():
    seg = _grid((16, 16), 2)
    model = RegionSum(seg == 1, channel=0)
    x = _x((2, 4, 16, 16))
    with pytest.raises(ValueError, match="n_samples"):
        lime_map(model, x, 1, segments=seg, n_samples=1)
    with pytest.raises(ValueError, match="n_samples"):
        lime_map(model, x, 1, segments=seg, n_samples=10.5)
    with pytest.raises(ValueError, match=r"segments.*\(8, 8\)"):
        lime_map(model, x, 1, segments=seg[:8, :8])
    with pytest.raises(ValueError, match=r"segments.*\(3, 16, 16\)"):
        lime_map(model, x, 1, segments=seg.expand(3, 16, 16))
    with pytest.raises(ValueError, match="integer"):
        lime_map(model, x, 1, segments=seg.float())
    with pytest.raises(ValueError, match="target"):
        lime_map(model, x, [1, 1, 1], segments=seg)
    with pytest.raises(ValueError, match="batch_size"):
        lime_map(model, x, 1, segments=seg, batch_size=0)
    with pytest.raises(ValueError, match=r"target \[5\] out of range"):
        lime_map(model, x, 5, segments=seg, n_samples=4)
