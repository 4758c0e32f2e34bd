"""Small CPU trainers: a classifier (timm or MONAI by name) and a MONAI U-Net segmenter.

Each writes a *model folder*: ``model.safetensors`` plus ``model_card.json`` (arch and its
kwargs, channels, classes, input shape, cohort config and seed, training config,
validation/test metrics, per-epoch history, checkpoint SHA-256, library versions), so an audit
can always say which model, trained on what, it looked at. ``train_or_load`` reuses a
checkpoint whose card carries the same cache key (hash of cohort config + training config).

Loading a model folder (the demo's output folder is one) takes one line::

    model, card = load_trained("reports/demo")      # architecture, kwargs and checksum from the card

which is ``load_model(folder / card["checkpoint"], card["arch"], **card["arch_kwargs"])`` plus
the checksum test. The card's ``arch`` alone is not enough: the default classifier is a
quarter-width ResNet-18 (``arch_kwargs={"channels": [16, 32, 64, 128]}``).

Model selection: the epoch with the lowest validation loss is kept (test data are touched
once, after training).  Augmentation: random flips along the in-plane left-right axis only
(lesion shape and marker identity are invariant to it; up-down flips would not be anatomical).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from audit.data.cohort import Cohort
from audit.models import load_model, save_state_dict
from probes.core.model import as_audit_model, model_state
from probes.core.stats import dice

__all__ = [
    "CARD",
    "CKPT",
    "TrainConfig",
    "TrainResult",
    "cache_key",
    "classification_metrics",
    "load_trained",
    "predict_masks",
    "predict_proba",
    "train_classifier",
    "train_or_load",
    "train_segmenter",
]

CARD = "model_card.json"
CKPT = "model.safetensors"


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. ``arch`` is a timm name or ``monai:<Net>``; ``arch_kwargs`` go to it.

    The default is a ResNet-18 (timm BasicBlocks, so every hook anchor exists) at a quarter of
    the width (16-32-64-128 channels, 0.7 M parameters): it trains on ~1,000 four-contrast 128²
    slices in about a minute and a half on two CPU cores, and keeps the residual structure of
    the full-size network.
    """

    arch: str = "resnet18"
    arch_kwargs: dict[str, Any] = field(default_factory=lambda: {"channels": (16, 32, 64, 128)})
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    augment: bool = True
    task: str = "classification"  # or "segmentation"
    seg_target: str = "gtv"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class TrainResult:
    """A trained model with its card and folder."""

    model: nn.Module
    card: dict[str, Any]
    folder: Path
    reused: bool = False


def _seed_all(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def _loader(cohort: Cohort, batch_size: int, shuffle: bool, gen: torch.Generator | None,
            masks: tuple[str, ...] = ()) -> DataLoader:
    ds = cohort.as_dataset(mask_names=masks)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=0)


def _flip(x: torch.Tensor, gen: torch.Generator, *others: torch.Tensor):
    """Flip a random half of the batch along the last (left-right) axis."""
    sel = torch.rand(x.shape[0], generator=gen) < 0.5
    out = [x] + list(others)
    for i, t in enumerate(out):
        t = t.clone()
        t[sel] = t[sel].flip(-1)
        out[i] = t
    return out


@torch.no_grad()
def predict_proba(model: nn.Module, cohort: Cohort, batch_size: int = 64) -> np.ndarray:
    """Class probabilities, shape (N, K), in cohort order: softmax of the logits, or the model's
    own probabilities when its declared interface says so (run in eval mode, mode restored)."""
    net = as_audit_model(model)
    with model_state(model):
        outs = [torch.softmax(net(b["image"]), dim=1) for b in _loader(cohort, batch_size, False, None)]
    return torch.cat(outs).numpy()


@torch.no_grad()
def predict_masks(model: nn.Module, cohort: Cohort, batch_size: int = 16) -> np.ndarray:
    """Arg-max foreground masks of a segmenter, shape (N, *spatial), bool (eval mode, mode restored).

    Channels-first cohort images are fed in the model's declared input layout."""
    net = as_audit_model(model)
    with model_state(model):
        outs = [net(b["image"]).argmax(1) > 0 for b in _loader(cohort, batch_size, False, None)]
    return torch.cat(outs).numpy()


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """accuracy (arg-max), AUC (class 1 vs rest; NaN if one class), mean cross-entropy."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, int)
    acc = float((probs.argmax(1) == labels).mean())
    auc = float(roc_auc_score(labels, probs[:, 1])) if len(np.unique(labels)) == 2 else float("nan")
    ce = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())
    return {"accuracy": acc, "auc": auc, "cross_entropy": ce, "n": len(labels)}


def _arch_kwargs(cfg: TrainConfig, spatial_dims: int) -> dict[str, Any]:
    """The full keyword set the architecture is built with (stored in the card as is)."""
    kw: dict[str, Any] = {}
    if cfg.arch.startswith("monai:"):
        kw["spatial_dims"] = spatial_dims
    if cfg.task == "segmentation" and cfg.arch == "monai:UNet":
        kw.update(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    kw.update(cfg.arch_kwargs)
    return kw


def _build(cfg: TrainConfig, in_chans: int, num_classes: int, spatial_dims: int) -> nn.Module:
    kw = _arch_kwargs(cfg, spatial_dims)
    return load_model(None, cfg.arch, in_chans=in_chans, num_classes=num_classes, **kw)


def _cohort_info(cohort: Cohort) -> dict[str, Any]:
    meta = dict(cohort.meta) if cohort.meta else {}
    return json.loads(json.dumps(meta, default=str))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_key(cohort_info: dict[str, Any], cfg: TrainConfig) -> str:
    """Stable hash of (cohort config, training config) — the checkpoint cache key."""
    blob = json.dumps({"cohort": cohort_info, "train": cfg.to_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic algorithms while training (warn-only: an op without one still runs)."""
    before, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn)


def _fit(model: nn.Module, splits: dict[str, Cohort], cfg: TrainConfig, gen: torch.Generator,
         loss_fn: Callable, masks: tuple[str, ...], progress: Callable[[str, float], None] | None):
    with _deterministic():
        return _fit_epochs(model, splits, cfg, gen, loss_fn, masks, progress)


def _fit_epochs(model: nn.Module, splits: dict[str, Cohort], cfg: TrainConfig, gen: torch.Generator,
                loss_fn: Callable, masks: tuple[str, ...], progress: Callable[[str, float], None] | None):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = _loader(splits["train"], cfg.batch_size, True, gen, masks)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * len(train))
    history, best, best_state = [], float("inf"), None
    for epoch in range(cfg.epochs):
        model.train()
        total, n = 0.0, 0
        for batch in train:
            x = batch["image"]
            y = batch["masks"][masks[0]].long()[:, None] if masks else batch["label"]
            if cfg.augment:
                x, y = _flip(x, gen, y) if masks else (_flip(x, gen)[0], y)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()) * len(x), n + len(x)
            if progress:
                progress("train", 1.0 / (cfg.epochs * len(train)))
        val_loss = _eval_loss(model, splits["val"], loss_fn, masks, cfg.batch_size)
        history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), "val_loss": val_loss})
        if val_loss < best:
            best, best_state = val_loss, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return history


@torch.no_grad()
def _eval_loss(model, cohort, loss_fn, masks, batch_size) -> float:
    model.eval()
    total, n = 0.0, 0
    for b in _loader(cohort, batch_size, False, None, masks):
        y = b["masks"][masks[0]].long()[:, None] if masks else b["label"]
        total, n = total + float(loss_fn(model(b["image"]), y)) * len(y), n + len(y)
    return total / max(n, 1)


def _write(model: nn.Module, card: dict[str, Any], folder: Path) -> TrainResult:
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = save_state_dict(model, folder / CKPT)
    card["checkpoint"] = CKPT
    card["checkpoint_sha256"] = _sha256(ckpt)
    (folder / CARD).write_text(json.dumps(card, indent=2, default=str))
    return TrainResult(model, card, folder)


def _class_names(meta: dict[str, Any], num_classes: int) -> list[str]:
    """Class names from cohort meta (``classes`` list or ``label_names`` {index: name})."""
    names = meta.get("classes") or meta.get("label_names")
    if isinstance(names, dict):
        return [str(names.get(i, names.get(str(i), i))) for i in range(num_classes)]
    return [str(n) for n in names] if names else [str(i) for i in range(num_classes)]


def _base_card(cfg: TrainConfig, cohort: Cohort, num_classes: int, key: str, t0: float) -> dict[str, Any]:
    case = cohort[0]
    return {
        "task": cfg.task, "arch": cfg.arch,
        "arch_kwargs": json.loads(json.dumps(_arch_kwargs(cfg, case.image.ndim - 1))),
        "channels": list(case.channels), "in_chans": len(case.channels), "num_classes": num_classes,
        "classes": _class_names(cohort.meta, num_classes),
        "input_shape": list(case.image.shape), "spatial_dims": case.image.ndim - 1,
        "cohort": _cohort_info(cohort), "train_config": cfg.to_dict(), "cache_key": key,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "train_seconds": round(time.time() - t0, 1),
    }


def train_classifier(splits: dict[str, Cohort], cfg: TrainConfig = TrainConfig(), out_dir: str | Path = "model",
                     *, progress: Callable[[str, float], None] | None = None) -> TrainResult:
    """Train a classifier on ``splits["train"]``, select on ``"val"``, report every other split.

    Every split other than train/val (``test`` and counterfactual sets such as
    ``test_no_marker``) gets accuracy, AUC and cross-entropy in ``card["metrics"]``.
    """
    if cfg.task != "classification":
        raise ValueError(f"train_classifier needs task='classification', got {cfg.task!r}")
    for need in ("train", "val"):
        if need not in splits:
            raise KeyError(f"splits lacks {need!r}; has {sorted(splits)}")
    t0, gen = time.time(), _seed_all(cfg.seed)
    train = splits["train"]
    for name, c in splits.items():
        unlabeled = [case.case_id for case in c if case.label is None]
        if unlabeled:
            raise ValueError(f"split {name!r}: {len(unlabeled)} cases without a label, e.g. {unlabeled[:3]}")
    num_classes = max(max(c.labels) for c in splits.values() if len(c)) + 1
    model = _build(cfg, len(train[0].channels), num_classes, train[0].image.ndim - 1)
    history = _fit(model, splits, cfg, gen, F.cross_entropy, (), progress)
    metrics = {name: classification_metrics(predict_proba(model, c), np.asarray(c.labels))
               for name, c in splits.items()}
    card = _base_card(cfg, train, num_classes, cache_key(_cohort_info(train), cfg), t0)
    card.update(metrics=metrics, history=history)
    return _write(model, card, Path(out_dir))


def train_segmenter(splits: dict[str, Cohort], cfg: TrainConfig | None = None, out_dir: str | Path = "segmenter",
                    *, progress: Callable[[str, float], None] | None = None) -> TrainResult:
    """Train a MONAI U-Net (2 classes: background / ``cfg.seg_target``) with Dice + CE loss.

    Reported: mean and median per-case Dice of the arg-max mask on every split.
    """
    from monai.losses import DiceCELoss

    cfg = cfg or TrainConfig(arch="monai:UNet", arch_kwargs={}, task="segmentation", epochs=6, lr=3e-3,
                             batch_size=16)
    if cfg.task != "segmentation":
        raise ValueError(f"train_segmenter needs task='segmentation', got {cfg.task!r}")
    t0, gen = time.time(), _seed_all(cfg.seed)
    train = splits["train"]
    # every split is scored against the mask, so an unannotated case must fail here rather than
    # count as an empty mask (Cohort.as_dataset's rule for absent masks)
    for name, c in splits.items():
        missing = [case.case_id for case in c if cfg.seg_target not in case.masks]
        if missing:
            raise KeyError(f"mask {cfg.seg_target!r} missing in {len(missing)} {name} cases, e.g. {missing[:3]}")
    model = _build(cfg, len(train[0].channels), 2, train[0].image.ndim - 1)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    history = _fit(model, splits, cfg, gen, loss_fn, (cfg.seg_target,), progress)
    metrics = {}
    for name, c in splits.items():
        d = dice(predict_masks(model, c), np.stack([case.masks[cfg.seg_target] for case in c]))
        metrics[name] = {"dice_mean": float(d.mean()), "dice_median": float(np.median(d)), "n": len(d)}
    card = _base_card(cfg, train, 2, cache_key(_cohort_info(train), cfg), t0)
    card.update(metrics=metrics, history=history, classes=["background", cfg.seg_target])
    return _write(model, card, Path(out_dir))


def load_trained(folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Model (eval mode, on the CPU) and card from a model folder written by a trainer or the demo.

    Builds ``card["arch"]`` with ``card["arch_kwargs"]`` (JSON lists become tuples),
    ``num_classes`` and ``in_chans`` from the card, loads ``card["checkpoint"]`` into it with
    :func:`audit.models.load_model`, after checking the file's SHA-256 against the card.

    Raises:
        FileNotFoundError: no ``model_card.json``, or no checkpoint beside it.
        ValueError: the checkpoint changed after training (checksum), or does not fit.
    """
    folder = Path(folder)
    card_path = folder / CARD
    if not card_path.exists():
        raise FileNotFoundError(f"no {CARD} in {folder}")
    card = json.loads(card_path.read_text())
    ckpt = folder / card["checkpoint"]
    if not ckpt.exists():
        raise FileNotFoundError(f"{folder}/{CARD} names the checkpoint {card['checkpoint']!r}, "
                                f"which is not in {folder}")
    if _sha256(ckpt) != card["checkpoint_sha256"]:
        raise ValueError(f"{ckpt}: SHA-256 differs from the model card (file changed after training)")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in card["arch_kwargs"].items()}
    model = load_model(ckpt, card["arch"], num_classes=card["num_classes"], in_chans=card["in_chans"], **kw)
    return model, card


def train_or_load(splits: dict[str, Cohort], cfg: TrainConfig, folder: str | Path,
                  *, progress: Callable[[str, float], None] | None = None) -> TrainResult:
    """Reuse ``folder``'s checkpoint when its card has the same cache key, else train anew."""
    folder = Path(folder)
    key = cache_key(_cohort_info(splits["train"]), cfg)
    if (folder / CARD).exists():
        try:
            model, card = load_trained(folder)
            if card.get("cache_key") == key:
                return TrainResult(model, card, folder, reused=True)
        except (ValueError, FileNotFoundError, KeyError):
            pass  # stale or damaged cache: retrain
    fn = train_segmenter if cfg.task == "segmentation" else train_classifier
    return fn(splits, cfg, folder, progress=progress)
