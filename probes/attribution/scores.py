"""The score an attribution explains: each case's target-class entry of the model's scores.

Every attribution instrument explains ``s_n = out[n, target_n]`` of the logit-like scores that
``probes.core.as_audit_model`` returns for channels-first input: the logits of a logit model,
``log p`` of a probability model (softmax(log p) = p), or the input of its final softmax with
``ModelInterface(score="logit")``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from probes.core.errors import InputTypeError
from probes.core.validate import Target, as_targets, check_class_range, shape_of

__all__ = ["as_module", "checked_targets", "target_scores"]


def as_module(model: object, name: str = "model") -> nn.Module:
    """``model`` if it is an ``nn.Module``, else :class:`InputTypeError` naming ``name``."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(name, type(model).__name__, "an nn.Module",
                             message=f"{name} must be an nn.Module, got {type(model).__name__}")
    return model


def checked_targets(net: nn.Module, x: Tensor, target: Target, name: str = "target") -> Tensor:
    """``target`` as (N,) long class indices, each within the classes ``net`` scores.

    The number of classes is read from one no-grad forward of the first case (run it inside
    ``model_state``, so a training-mode model changes nothing): a class the model lacks is a
    ``ClassIndexError`` naming ``name`` at the door, not an index error deep in a method.
    """
    t = as_targets(target, x.shape[0], device=x.device, name=name)
    with torch.no_grad():
        out = net(x[:1])
    if isinstance(out, Tensor) and out.dim() == 2:
        check_class_range(t, out.shape[1], name)
    return t


def target_scores(out: Tensor, target: Tensor, instrument: str) -> Tensor:
    """``out[n, target_n]`` as an (N,) tensor, after checking ``out`` is (N, K) and every target < K.

    ``instrument`` names the caller in the error messages.
    """
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != target.shape[0]:
        raise ValueError(f"{instrument}: the model output must be class scores of shape "
                         f"(N={target.shape[0]}, classes); got {shape_of(out)}")
    check_class_range(target, out.shape[1])
    return out.gather(1, target.to(out.device)[:, None])[:, 0]
