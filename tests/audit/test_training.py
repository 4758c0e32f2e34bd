"""Trainers on a tiny cohort with a planted, trivially learnable rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audit.data.cohort import Case, Cohort
from audit.training import (
    TrainConfig,
    load_trained,
    predict_masks,
    predict_proba,
    train_classifier,
    train_or_load,
    train_segmenter,
)
from probes.core.stats import dice

SMALL = TrainConfig(arch="resnet18", arch_kwargs={"channels": (8, 16, 32, 64), "stem_width": 8},
                    epochs=14, batch_size=16, lr=3e-3)


def _toy(n: int, seed: int) -> Cohort:
    """Label 1 ⇔ a bright 6×6 square on channel 'B'; the square is also the 'spot' mask."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        img = rng.normal(0, 0.3, (2, 32, 32)).astype(np.float32)
        mask = np.zeros((32, 32), bool)
        label = int(i % 2)
        r, c = rng.integers(2, 24, 2)
        mask[r:r + 6, c:c + 6] = True
        if label:
            img[1][mask] += 2.0
        else:
            img[0][mask] += 2.0  # same square, wrong channel: the channel matters
        cases.append(Case(f"s{seed}_{i}", img, ("A", "B"), label, masks={"spot": mask}))
    return Cohort(cases, meta={"classes": ["absent", "present"], "generator": "toy", "seed": seed})


@pytest.fixture(scope="module")
def splits():
    return {"train": _toy(96, 0), "val": _toy(32, 1), "test": _toy(32, 2)}


def test_classifier_learns_writes_card_and_reloads(splits, tmp_path):
    res = train_classifier(splits, SMALL, tmp_path / "clf")
    card = json.loads((tmp_path / "clf" / "model_card.json").read_text())
    assert card["metrics"]["test"]["accuracy"] >= 0.9
    assert card["channels"] == ["A", "B"] and card["classes"] == ["absent", "present"]
    assert card["cohort"]["generator"] == "toy" and card["train_config"]["epochs"] == 14
    assert len(card["history"]) == 14 and card["input_shape"] == [2, 32, 32]
    # metrics in the card are recomputable from the saved checkpoint
    model, card2 = load_trained(tmp_path / "clf")
    p = predict_proba(model, splits["test"])
    acc = float((p.argmax(1) == np.asarray(splits["test"].labels)).mean())
    assert acc == pytest.approx(card["metrics"]["test"]["accuracy"])
    assert np.allclose(p, predict_proba(res.model, splits["test"]), atol=1e-6)
    # the selected epoch is the one with the lowest validation loss
    best = min(h["val_loss"] for h in card["history"])
    assert card["metrics"]["val"]["cross_entropy"] == pytest.approx(best, rel=1e-4)


def test_train_or_load_reuses_same_key_and_retrains_on_change(splits, tmp_path):
    first = train_or_load(splits, SMALL, tmp_path / "m")
    again = train_or_load(splits, SMALL, tmp_path / "m")
    assert not first.reused and again.reused
    changed = train_or_load(splits, TrainConfig(**{**SMALL.__dict__, "epochs": 2}), tmp_path / "m")
    assert not changed.reused and changed.card["train_config"]["epochs"] == 2


def test_tampered_checkpoint_is_refused(splits, tmp_path):
    train_classifier(splits, TrainConfig(**{**SMALL.__dict__, "epochs": 1}), tmp_path / "c")
    ckpt = tmp_path / "c" / "model.safetensors"
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_trained(tmp_path / "c")


def test_same_seed_same_weights(splits, tmp_path):
    cfg = TrainConfig(**{**SMALL.__dict__, "epochs": 1})
    a = train_classifier(splits, cfg, tmp_path / "a").model.state_dict()
    b = train_classifier(splits, cfg, tmp_path / "b").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unlabeled_case_is_refused(splits, tmp_path):
    bad = Cohort([Case("u", np.zeros((2, 32, 32), np.float32), ("A", "B"), None)])
    with pytest.raises(ValueError, match="without a label"):
        train_classifier({**splits, "val": bad}, SMALL, tmp_path / "x")


def test_segmenter_learns_the_square_and_dice_matches_monai(splits, tmp_path):
    from monai.metrics import DiceMetric

    cfg = TrainConfig(arch="monai:UNet", arch_kwargs={"channels": (8, 16, 32), "strides": (2, 2)},
                      task="segmentation", seg_target="spot", epochs=8, lr=1e-2, batch_size=16)
    res = train_segmenter(splits, cfg, tmp_path / "seg")
    pred = predict_masks(res.model, splits["test"])
    truth = np.stack([c.masks["spot"] for c in splits["test"]])
    ours = dice(pred, truth)
    metric = DiceMetric(include_background=True, reduction="none")
    ref = metric(torch.as_tensor(pred[:, None]).float(), torch.as_tensor(truth[:, None]).float()).numpy().ravel()
    assert np.allclose(ours, ref, atol=1e-6)
    assert res.card["metrics"]["test"]["dice_mean"] == pytest.approx(float(ours.mean()))
    assert res.card["metrics"]["test"]["dice_mean"] >= 0.7
    model, _ = load_trained(tmp_path / "seg")
    assert np.array_equal(predict_masks(model, splits["test"]), pred)


def test_model_folder_loads_in_one_line_with_the_cards_arch(splits, tmp_path):
    """The card's arch alone does not fit the narrow default ResNet: its arch_kwargs do, and
    load_trained applies them; a bare load_model says where the card is."""
    from audit.models import CheckpointMismatchError, load_model

    res = train_classifier(splits, TrainConfig(**{**SMALL.__dict__, "epochs": 1}), tmp_path / "f")
    card = res.card
    ckpt = tmp_path / "f" / card["checkpoint"]
    ref = predict_proba(res.model, splits["test"])
    by_card = load_model(ckpt, card["arch"], **card["arch_kwargs"])
    model, _ = load_trained(tmp_path / "f")
    for m in (by_card, model):
        assert not m.training
        np.testing.assert_allclose(predict_proba(m, splits["test"]), ref, atol=1e-6)
    with pytest.raises(CheckpointMismatchError, match=r"model_card\.json describes this checkpoint.*load_trained"):
        load_model(ckpt, card["arch"])
    ckpt.unlink()
    with pytest.raises(FileNotFoundError, match=r"names the checkpoint 'model.safetensors', which is not in"):
        load_trained(tmp_path / "f")


def test_predictions_honour_the_declared_interface_and_restore_the_mode(splits, tmp_path):
    """predict_proba/predict_masks feed the model in its declared layout, read its declared
    output, run in eval mode and leave the training flags as found."""
    from torch import nn

    from probes.core.model import ModelInterface

    res = train_classifier(splits, TrainConfig(**{**SMALL.__dict__, "epochs": 1}), tmp_path / "g")
    ref = predict_proba(res.model, splits["test"])

    class ChannelsLastProbabilities(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net
            self.medaudit_interface = ModelInterface("channels_last", "probabilities")

        def forward(self, x):
            return torch.softmax(self.net(x.movedim(-1, 1)), dim=1)

    wrapped = ChannelsLastProbabilities(res.model).train()
    np.testing.assert_allclose(predict_proba(wrapped, splits["test"]), ref, atol=1e-5)
    assert wrapped.training and res.model.training  # restored: train() set every module
    res.model.eval()


def test_segmenter_refuses_a_split_without_its_target_mask(splits, tmp_path):
    """Every split is scored against the target mask: an unannotated case is an error, not an
    empty mask (as_dataset would otherwise fill it with False)."""
    cfg = TrainConfig(arch="monai:UNet", arch_kwargs={"channels": (8, 16), "strides": (2,)},
                      task="segmentation", seg_target="spot", epochs=1)
    bare = Cohort([Case("v0", np.zeros((2, 32, 32), np.float32), ("A", "B"), 0)])
    with pytest.raises(KeyError, match=r"'spot' missing in 1 val cases.*'v0'"):
        train_segmenter({**splits, "val": bare}, cfg, tmp_path / "s")
