"""Trainers on a tiny cohort with a planted, trivially learnable rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audit.data.cohort import Case, Cohort
from audit.training import (TrainConfig, dice_score, load_trained, predict_masks, predict_proba,
                         train_classifier, train_or_load, train_segmenter)

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
    ours = dice_score(pred, truth)
    metric = DiceMetric(include_background=True, reduction="none")
    ref = metric(torch.as_tensor(pred[:, None]).float(), torch.as_tensor(truth[:, None]).float()).numpy().ravel()
    assert np.allclose(ours, ref, atol=1e-6)
    assert res.card["metrics"]["test"]["dice_mean"] == pytest.approx(float(ours.mean()))
    assert res.card["metrics"]["test"]["dice_mean"] >= 0.7
    model, _ = load_trained(tmp_path / "seg")
    assert np.array_equal(predict_masks(model, splits["test"]), pred)
