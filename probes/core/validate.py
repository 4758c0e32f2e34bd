"""Validators every instrument calls at the door: inputs, targets, maps, masks, labels, case ids.

One rule per concept, one message format: the argument's name, what was given (value, shape or
dtype) and what was expected. Shapes follow the vocabulary of ``probes.core``:

=============  ==========================================================================
``x``          model input ``(N, C, *spatial)``, channels first, 1-3 spatial dims
``target``     class index: an int for every case, or one int per case ``(N,)``
``maps``       attribution maps ``(N, C_map, *spatial)``, ``C_map`` = 1 or = C (per contrast)
``mask``       one ROI ``(N, *spatial)`` or ``(N, 1, *spatial)``, boolean or 0/1
``masks``      ``{roi name: mask}``
``labels``     true classes ``(N,)``, integers (0/1 where the instrument is binary)
``case_ids``   one id per case, stored as ``str``
=============  ==========================================================================
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from probes.core.errors import (ClassIndexError, InputTypeError, LabelError, NonFiniteError, OptionError,
                                ShapeError)

__all__ = ["Target", "to_numpy", "shape_of", "as_input", "as_targets", "check_class_range", "as_maps",
           "as_mask", "as_masks", "as_labels", "as_case_ids", "check_int", "check_alpha",
           "check_choice", "check_finite", "expected_channels", "check_channels"]

Target = Union[int, Sequence[int], Tensor]


def shape_of(a: Any) -> str:
    """``(2, 4, 64, 64)`` for arrays and tensors, the type name otherwise (for messages)."""
    shape = getattr(a, "shape", None)
    return str(tuple(shape)) if shape is not None else type(a).__name__


def to_numpy(a: Any, name: str) -> np.ndarray:
    """A detached CPU numpy view of a tensor/array/result with ``.maps``; object arrays refused."""
    a = getattr(a, "maps", a)
    if isinstance(a, Tensor):
        a = a.detach().cpu()
        a = a.float().numpy() if a.dtype == torch.bfloat16 else a.numpy()
    a = np.asarray(a)
    if a.dtype == object:
        raise InputTypeError(name, "dtype object", "a numeric array or tensor",
                             message=f"{name} must be a numeric array or tensor, got dtype object")
    return a


def check_finite(t: Any, name: str) -> None:
    """:class:`NonFiniteError` naming ``name`` and counting NaN/Inf entries, when there are any."""
    a = t.detach() if isinstance(t, Tensor) else torch.as_tensor(np.asarray(t))
    if a.is_floating_point() or a.is_complex():
        bad = ~torch.isfinite(a)
        if bool(bad.any()):
            n_nan = int(torch.isnan(a).sum())
            raise NonFiniteError(name, f"{n_nan} NaN and {int(bad.sum()) - n_nan} Inf values of {a.numel()}",
                                 "finite values",
                                 message=f"{name} contains NaN/Inf ({n_nan} NaN, {int(bad.sum()) - n_nan} Inf "
                                         f"of {a.numel()} values, shape {tuple(a.shape)})")


def expected_channels(model: nn.Module) -> int | None:
    """Input channels the model takes: ``in_channels`` of its first convolution (None if unknown)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(m.in_channels)
    return None


def check_channels(x: Tensor, model: nn.Module | None, name: str = "x") -> None:
    """:class:`ShapeError` when ``x``'s channel axis (dim 1) does not match the model's first conv."""
    want = expected_channels(model) if model is not None else None
    if want is not None and x.shape[1] != want:
        raise ShapeError(name, f"shape {tuple(x.shape)} with {x.shape[1]} channels at dim 1",
                         f"{want} channels (the model's first convolution), channels first (N, C, *spatial)")


def as_input(x: Any, name: str = "x", *, model: nn.Module | None = None, finite: bool = True) -> Tensor:
    """``x`` as a floating tensor ``(N, C, *spatial)`` with N ≥ 1 and 1-3 spatial dims.

    A numpy array is accepted; integer images are converted to float32; with ``model`` the
    values are cast to the model's parameter dtype (float64 input for a float32 model is
    converted, never passed on to fail inside torch) and the channel count is checked against
    its first convolution. NaN/Inf are refused when ``finite``.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x))
    if not isinstance(x, Tensor):
        raise InputTypeError(name, type(x).__name__, "a torch.Tensor (N, C, *spatial)",
                             message=f"{name} must be a torch.Tensor (N, C, *spatial), got {type(x).__name__}")
    if x.dim() not in (3, 4, 5) or x.shape[0] == 0:
        raise ShapeError(name, f"shape {tuple(x.shape)}", "(N, C, *spatial) with N >= 1 and 1-3 spatial dims",
                         message=f"{name} must be a tensor (N, C, *spatial) with N >= 1 and 1-3 spatial dims; "
                                 f"got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise InputTypeError(name, f"dtype {x.dtype}", "real-valued intensities")
    if not x.is_floating_point():
        x = x.float()
    if model is not None:
        p = next((q for q in model.parameters() if q.is_floating_point()), None)
        if p is not None and x.dtype != p.dtype:
            x = x.to(p.dtype)
        check_channels(x, model, name)
    if finite:
        check_finite(x, name)
    return x


def as_targets(target: Target, n: int, *, device: torch.device | None = None, name: str = "target") -> Tensor:
    """``target`` as a long tensor ``(n,)``: an int is repeated, a sequence must have n entries.

    Floating, boolean and complex values are refused (a class index is an integer).
    """
    t = target.detach() if isinstance(target, Tensor) else torch.as_tensor(np.asarray(target))
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise ClassIndexError(name, f"dtype {t.dtype}", "integer class indices",
                              message=f"{name} must hold integer class indices; got dtype {t.dtype}")
    if t.dim() == 0 or t.numel() == 1:
        t = t.reshape(()).expand(n)
    if t.dim() != 1 or t.shape[0] != n:
        raise ShapeError(name, f"shape {tuple(t.shape)}", f"an int or {n} class indices",
                         message=f"{name} must be an int or a length-{n} sequence of class indices (one per case "
                                 f"of x); got shape {tuple(t.shape)}")
    t = t.long().clone()
    return t if device is None else t.to(device)


def check_class_range(t: Tensor, n_classes: int, name: str = "target") -> None:
    """ValueError when a class index lies outside ``[0, n_classes)``."""
    bad = (t < 0) | (t >= n_classes)
    if bool(bad.any()):
        raise ClassIndexError(name, t[bad].unique().tolist(), f"classes 0..{n_classes - 1}",
                              message=f"{name} {t[bad].unique().tolist()} out of range for {n_classes} output classes")


def as_maps(maps: Any, x_shape: Sequence[int] | None = None, name: str = "maps", *, finite: bool = True) -> Tensor:
    """Maps ``(N, C_map, *spatial)`` as a detached float64 CPU tensor.

    With ``x_shape`` = the input's ``(N, C, *spatial)``: N and spatial must match and
    ``C_map`` must be 1 or C. Results carrying ``.maps`` (``Attribution``) are accepted.
    NaN/Inf are refused (``NonFiniteError``) unless ``finite=False``.
    """
    m = torch.as_tensor(to_numpy(maps, name)).to(torch.float64)
    if m.dim() < 3:
        raise ShapeError(name, f"shape {tuple(m.shape)}", "(N, C_map, *spatial)",
                         message=f"{name} must be (N, C_map, *spatial) with >= 1 spatial dim, got shape "
                                 f"{tuple(m.shape)}")
    if x_shape is not None:
        xs = tuple(x_shape)
        if m.dim() != len(xs) or m.shape[0] != xs[0] or tuple(m.shape[2:]) != xs[2:] or m.shape[1] not in (1, xs[1]):
            raise ShapeError(name, f"shape {tuple(m.shape)}", f"(N, 1 or C, *spatial) fitting x {xs}",
                             message=f"{name} shape {tuple(m.shape)} does not fit x shape {xs}: expected "
                                     "(N, 1 or C, *spatial)")
    if finite:
        check_finite(m, name)
    return m


def as_mask(mask: Any, ref_shape: Sequence[int], name: str = "mask", ref_name: str = "maps",
            *, binary: bool = False) -> np.ndarray:
    """One ROI as ``(N, *spatial)`` against ``ref_shape`` = ``(N, C, *spatial)``.

    Accepts ``(N, *spatial)`` or ``(N, 1, *spatial)``; returns bool (non-zero = inside). With
    ``binary=True`` values other than 0/1 (and NaN) are refused.
    """
    s = to_numpy(mask, name)
    n, spatial = ref_shape[0], tuple(ref_shape[2:])
    if s.ndim == len(spatial) + 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.shape != (n, *spatial):
        raise ShapeError(name, f"shape {tuple(s.shape)}", f"(N, *spatial) = {(n, *spatial)}",
                         message=f"{name} shape {tuple(s.shape)} does not match {ref_name} shape {tuple(ref_shape)}: "
                                 f"expected (N, *spatial) = {(n, *spatial)} or (N, 1, *spatial)")
    if binary and s.dtype != bool:
        if s.dtype.kind == "f" and not np.isfinite(s).all():
            raise NonFiniteError(name, "NaN/Inf", "0/1", message=f"{name} contains NaN/Inf")
        bad = (s != 0) & (s != 1)
        if bad.any():
            raise LabelError(name, np.unique(s[bad])[:5].tolist(), "boolean or 0/1",
                             message=f"{name} must be boolean or 0/1; found values such as "
                                     f"{np.unique(s[bad])[:5].tolist()}")
    return s.astype(bool)


def as_masks(masks: Any, ref_shape: Sequence[int], name: str = "masks", ref_name: str = "x",
             *, binary: bool = False) -> dict[str, np.ndarray]:
    """``{roi name: mask}`` → ``{str: (N, *spatial) bool}``, each checked by :func:`as_mask`."""
    if not isinstance(masks, Mapping) or not masks:
        raise InputTypeError(name, type(masks).__name__, "a non-empty mapping",
                             message=f"{name} must be a non-empty mapping roi name → (N, *spatial) mask, got "
                                     f"{type(masks).__name__}")
    return {str(k): as_mask(v, ref_shape, f"{name}[{k!r}]", ref_name, binary=binary) for k, v in masks.items()}


def as_labels(labels: Any, n: int, name: str = "labels", *, binary: bool = True) -> np.ndarray:
    """True classes as an int array ``(n,)``; with ``binary`` only 0 and 1 are allowed."""
    y = to_numpy(labels, name).reshape(-1)
    if y.shape[0] != n:
        raise ShapeError(name, f"{y.shape[0]} entries", f"{n} (one per case)",
                         message=f"{name} has {y.shape[0]} entries for {n} cases")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise LabelError(name, "NaN or non-integer values", "integer classes",
                         message=f"{name} must be integer classes (found NaN or non-integer values)")
    if y.dtype.kind not in "biuf":
        raise LabelError(name, f"dtype {y.dtype}", "integer classes",
                         message=f"{name} must be integer classes, got dtype {y.dtype}")
    y = y.astype(int)
    if binary and not np.isin(y, (0, 1)).all():
        raise LabelError(name, np.unique(y)[:5].tolist(), "0/1",
                         message=f"{name} must be 0/1, got values {np.unique(y)[:5].tolist()}")
    return y


def as_case_ids(case_ids: Sequence[Any] | None, n: int, name: str = "case_ids") -> list[str]:
    """One id per case as ``str`` (default ``"0"``, ``"1"``, ...)."""
    if case_ids is None:
        return [str(i) for i in range(n)]
    ids = [str(c) for c in (case_ids.tolist() if hasattr(case_ids, "tolist") else case_ids)]
    if len(ids) != n:
        raise ShapeError(name, f"{len(ids)} entries", f"{n} (one per case)",
                         message=f"{name} has {len(ids)} entries for {n} cases")
    return ids


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum`` (bools refused), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OptionError(name, repr(value), f"an int >= {minimum}",
                          message=f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_alpha(alpha: Any, name: str = "alpha") -> float:
    """A significance level in (0, 1) (two-sided intervals are ``1 − alpha``)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise OptionError(name, repr(alpha), "a number in (0, 1)", message=f"{name} must be in (0, 1), got {alpha!r}")
    return float(alpha)


def check_choice(value: Any, name: str, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else ValueError listing them."""
    if value not in allowed:
        raise OptionError(name, repr(value), f"one of {', '.join(map(repr, allowed))}",
                          message=f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
    return value
