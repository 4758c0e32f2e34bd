"""The score an attribution explains: each case's target-class entry of the model's scores.

Every attribution instrument explains ``s_n = out[n, target_n]`` of the logit-like scores that
``probes.core.as_audit_model`` returns for channels-first input: the logits of a logit model,
``log p`` of a probability model (softmax(log p) = p), or the input of its final softmax with
``ModelInterface(score="logit")``.
"""

from __future__ import annotations

from torch import Tensor

from probes.core.validate import check_class_range, shape_of

__all__ = ["target_scores"]


def target_scores(out: Tensor, target: Tensor, instrument: str) -> Tensor:
    """``out[n, target_n]`` as an (N,) tensor, after checking ``out`` is (N, K) and every target < K.

    ``instrument`` names the caller in the error messages.
    """
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != target.shape[0]:
        raise ValueError(f"{instrument}: the model output must be class scores of shape "
                         f"(N={target.shape[0]}, classes); got {shape_of(out)}")
    check_class_range(target, out.shape[1])
    return out.gather(1, target.to(out.device)[:, None])[:, 0]
