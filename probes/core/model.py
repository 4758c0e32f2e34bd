"""The model as an instrument sees it: its declared interface, and the state it must leave as found.

* :class:`ModelInterface` — how to feed a model and read its output (``input_layout``,
  ``output``, ``score``); ``load_model`` sets it as ``model.medaudit_interface``, and every
  instrument honours it through :func:`as_audit_model`.
* :class:`AuditAdapter` — takes channels-first input ``(N, C, *spatial)`` and returns scores
  that act as logits; ``.probabilities(x)`` returns class probabilities without a round trip.
* :func:`output_probabilities` — the one meaning of the ``output`` keyword: ``"logits"``
  (softmax over dim 1), ``"probabilities"`` (as is), ``"log_probabilities"`` (exp) or a
  callable mapping the raw output to ``(N, K)`` probabilities.
* :class:`ModelSnapshot` and :func:`model_state` — what an audit must leave unchanged: every
  parameter and buffer bit-identical, each module's ``training`` flag, each parameter's
  ``requires_grad`` and ``.grad`` presence, and hook counts.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Union, get_args

import torch
from torch import Tensor, nn

from probes.core.errors import InputTypeError, OptionError

__all__ = ["ModelSnapshot", "model_state", "ModelInterface", "InputLayout", "OutputKind", "Score",
           "Output", "model_interface", "AuditAdapter", "as_audit_model", "output_probabilities",
           "class_probabilities", "model_device",
           "UnsupportedModelError"]

InputLayout = Literal["channels_first", "channels_last"]
OutputKind = Literal["logits", "probabilities", "log_probabilities"]
Score = Literal["log_probability", "logit"]
Output = Union[OutputKind, Callable[[Tensor], Tensor], None]


class UnsupportedModelError(ValueError):
    """An instrument cannot run on this model (its interface or architecture); says which and why."""


# --------------------------------------------------------------------------- interface
@dataclass(frozen=True)
class ModelInterface:
    """How to feed a model and how to read its output.

    ``input_layout``: ``"channels_first"`` (N, C, *spatial), the PyTorch convention, or
    ``"channels_last"`` (N, *spatial, C), common in ONNX models exported from TensorFlow.
    ``output``: ``"logits"``; ``"probabilities"`` (softmax over dim 1 already applied);
    ``"log_probabilities"`` (log-softmax over dim 1). Outputs are never permuted: classes
    are expected at dim 1 whatever the input layout.
    ``score``: what gradient-based instruments explain when ``output`` is ``"probabilities"``:
    ``"log_probability"`` (log p_c = z_c − logsumexp z, the default: softmax(log p) = p, so
    log p acts as logits) or ``"logit"`` (the input z of the model's final softmax module,
    found by one probe forward; a model whose output is not a softmax module's is refused).
    """

    input_layout: InputLayout = "channels_first"
    output: OutputKind = "logits"
    score: Score = "log_probability"

    def __post_init__(self) -> None:
        # Validate here so a typo fails when the model is loaded, not deep inside a probe.
        for name, allowed in (("input_layout", get_args(InputLayout)), ("output", get_args(OutputKind)),
                              ("score", get_args(Score))):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not valid; choose one of {list(allowed)}")


def model_interface(model: nn.Module) -> ModelInterface:
    """Return ``model.medaudit_interface``, or the default (channels-first, logits)."""
    interface = getattr(model, "medaudit_interface", None) or ModelInterface()
    if not isinstance(interface, ModelInterface):
        raise TypeError(f"model.medaudit_interface must be a ModelInterface, got {type(interface)}")
    return interface


def output_probabilities(out: Tensor, output: Output = "logits", *, dtype: torch.dtype | None = None) -> Tensor:
    """Class probabilities ``(N, K)`` from a raw model output, by the ``output`` keyword.

    ``"logits"``: softmax over dim 1 (computed in ``dtype`` when given); ``"probabilities"``:
    unchanged; ``"log_probabilities"``: exp; a callable: ``output(out)``.
    """
    if callable(output):
        p = output(out)
    else:
        if output is None:
            output = "logits"
        if output not in get_args(OutputKind):
            raise OptionError("output", repr(output), f"one of {list(get_args(OutputKind))} or a callable",
                              message=f"output={output!r} is not valid; choose one of {list(get_args(OutputKind))} "
                                      "or pass a callable mapping the model output to (N, K) probabilities")
        if not isinstance(out, Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"model output must be (N, K) {output} for output={output!r}, got {shape}; "
                             "pass output= a callable mapping the output to (N, K) probabilities")
        o = out if dtype is None else out.to(dtype)
        p = {"logits": lambda: torch.softmax(o, dim=1), "probabilities": lambda: o,
             "log_probabilities": lambda: o.exp()}[output]()
    if not isinstance(p, Tensor) or p.dim() != 2:
        shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
        raise ValueError(f"output= must give (N, K) probabilities, got {shape}")
    return p


def _is_softmax(m: nn.Module) -> bool:
    # onnx2torch turns ONNX Softmax into nn.Softmax (opset >= 13) or OnnxSoftmaxV1V11.
    return isinstance(m, nn.Softmax) or type(m).__name__.lower().startswith("onnxsoftmax")


class AuditAdapter(nn.Module):
    """Wrap a model so it takes channels-first input and returns scores that act as logits.

    Channels-first input (N, C, *spatial) is moved to (N, *spatial, C) when the wrapped model
    is channels-last. Probability outputs become ``log(clamp(p, tiny))`` (the clamp keeps exact
    zeros finite, and ``softmax(log p) == p``), or the final softmax's input when the interface's
    ``score`` is ``"logit"``. Log-probabilities are returned unchanged (they are logits up to a
    constant per sample). ``probabilities(x)`` gives the class probabilities directly.

    The wrapped model is the submodule ``model``, so module names seen through the adapter gain
    the prefix ``model.``; ``HookRegistry`` names its points on the wrapped model instead. The
    adapter itself reports the default interface, so wrapping twice is harmless.
    """

    def __init__(self, model: nn.Module, interface: ModelInterface | None = None,
                 output: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        self.model = model
        self.interface = model_interface(model) if interface is None else interface
        self.output_fn = output  # a callable output (raw output -> probabilities), else None
        self.medaudit_interface = ModelInterface()
        self._softmax: str | None = None
        # nn.Module starts in training mode; mirror the wrapped model instead.
        self.train(model.training)

    def _raw(self, x: Tensor) -> Tensor:
        if self.interface.input_layout == "channels_last":
            if x.ndim < 3:
                raise ValueError(f"expected (N, C, *spatial) input, got shape {tuple(x.shape)}")
            x = x.movedim(1, -1)
        return self.model(x)

    def forward(self, x: Tensor) -> Tensor:
        """Feed channels-first ``x`` to the wrapped model and return logit-like scores."""
        if self.output_fn is not None:
            p = self.output_fn(self._raw(x))
            return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        if self.interface.output == "probabilities" and self.interface.score == "logit":
            return self._logits_before_softmax(x)
        out = self._raw(x)
        if self.interface.output == "probabilities":
            out = torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))
        return out

    def probabilities(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Class probabilities ``(N, K)`` for channels-first ``x``."""
        output = self.output_fn if self.output_fn is not None else self.interface.output
        return output_probabilities(self._raw(x), output, dtype=dtype)

    def prepare(self, x: Tensor) -> None:
        """Do the one-time probe forward (finding the final softmax for ``score="logit"``) now,
        before a caller installs hooks that must see only the real forward."""
        if self.output_fn is None and self.interface.output == "probabilities" and self.interface.score == "logit":
            self._final_softmax(x)

    def _final_softmax(self, x: Tensor) -> str:
        """Name of the softmax module whose output is the model's output (one probe forward)."""
        if self._softmax is None:
            seen: dict[int, str] = {}
            handles = [m.register_forward_hook(lambda mod, a, o, n=n: seen.__setitem__(id(o), n))
                       for n, m in self.model.named_modules() if _is_softmax(m)]
            try:
                with torch.no_grad():
                    out = self._raw(x[:1])
            finally:
                for h in handles:
                    h.remove()
            if id(out) not in seen:
                raise UnsupportedModelError(
                    "score='logit' needs the model's output to come from a softmax module "
                    "(nn.Softmax, or ONNX Softmax through onnx2torch); this model's does not. "
                    "Use score='log_probability' or load the model without its final softmax")
            self._softmax = seen[id(out)]
        return self._softmax

    def _logits_before_softmax(self, x: Tensor) -> Tensor:
        module = dict(self.model.named_modules())[self._final_softmax(x)]
        handle = module.register_forward_hook(lambda mod, args, out: args[0])
        try:
            return self._raw(x)
        finally:
            handle.remove()


def as_audit_model(model: nn.Module, output: Output = None) -> nn.Module:
    """A model that takes channels-first input and returns logit-like scores.

    ``output=None`` honours the model's declared interface (``model.medaudit_interface``);
    ``"logits"``, ``"probabilities"``, ``"log_probabilities"`` or a callable (raw output →
    probabilities) override what it returns. A model with nothing to adapt (including an
    :class:`AuditAdapter`) is returned as is; otherwise it is wrapped in an :class:`AuditAdapter`.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError("model", type(model).__name__, "a torch.nn.Module (load a checkpoint with "
                             "audit.models.load_model)")
    if isinstance(model, AuditAdapter) and output is None:
        return model
    interface = model_interface(model)
    if callable(output):
        return AuditAdapter(model, interface, output=output)
    if output is not None:
        if output not in get_args(OutputKind):
            raise OptionError("output", repr(output), f"one of {list(get_args(OutputKind))} or a callable",
                              message=f"output={output!r} is not valid; choose one of {list(get_args(OutputKind))} "
                                      "or pass a callable mapping the model output to (N, K) probabilities")
        interface = ModelInterface(interface.input_layout, output, interface.score)
    return model if interface == ModelInterface() else AuditAdapter(model, interface)


def class_probabilities(net: nn.Module, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``(N, K)`` class probabilities of ``net`` (from :func:`as_audit_model`) on channels-first ``x``.

    A model declared to return probabilities (or log-probabilities, or given a callable
    ``output``) is read directly, without a round trip through logits; otherwise
    ``softmax(net(x))`` over dim 1, computed in ``dtype`` when given. ``x`` is checked like
    any input (``probes.core.validate.as_input``); the model runs in eval mode and is restored
    (``model_state``).
    """
    from probes.core.validate import as_input  # validate imports nothing from here: no cycle at run time

    if not isinstance(net, nn.Module):
        raise InputTypeError("net", type(net).__name__, "a torch.nn.Module")
    x = as_input(x, "x", model=net)
    with model_state(net, warn="class_probabilities"):
        if isinstance(net, AuditAdapter):
            return net.probabilities(x, dtype)
        return output_probabilities(net(x), "logits", dtype=dtype)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


# --------------------------------------------------------------------------- state
def _hook_count(m: nn.Module) -> int:
    return (len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            + len(getattr(m, "_backward_pre_hooks", {})))


@contextmanager
def model_state(model: nn.Module, *, eval: bool = True, warn: str | None = None) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode; restore every module's ``training`` flag after.

    With ``warn`` (the instrument's name), a model found in training mode gets one warning
    saying that it was switched to eval mode for the computation. Restores on error too.
    """
    modes = {m: m.training for m in model.modules()}
    if eval and warn and any(modes.values()):
        warnings.warn(f"{warn}: the model is in training mode; it runs in eval mode for this computation "
                      "(BatchNorm uses its running statistics, dropout is off) and is restored after",
                      UserWarning, stacklevel=3)
    try:
        if eval:
            model.eval()
        yield model
    finally:
        for m, flag in modes.items():
            m.training = flag


@dataclass(frozen=True)
class ModelSnapshot:
    """Copies of the state a probe must not change (see module docstring)."""

    tensors: dict[str, torch.Tensor]
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    has_grad: dict[str, bool]
    hooks: dict[str, int]

    @classmethod
    def take(cls, model: nn.Module) -> "ModelSnapshot":
        """Copy parameters and buffers (``state_dict(keep_vars=False)`` clones) and flags."""
        tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return cls(
            tensors=tensors,
            training={n: m.training for n, m in model.named_modules()},
            requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
            has_grad={n: p.grad is not None for n, p in model.named_parameters()},
            hooks={n: _hook_count(m) for n, m in model.named_modules()},
        )

    def diff(self, model: nn.Module) -> list[str]:
        """Human-readable differences between this snapshot and ``model`` now (empty: none)."""
        now = ModelSnapshot.take(model)
        out: list[str] = []
        for k, v in self.tensors.items():
            w = now.tensors.get(k)
            if w is None or w.shape != v.shape or not torch.equal(w, v):
                out.append(f"tensor {k!r} changed")
        for field in ("training", "requires_grad", "has_grad", "hooks"):
            a, b = getattr(self, field), getattr(now, field)
            for k in a.keys() | b.keys():
                if a.get(k) != b.get(k):
                    out.append(f"{field} of {k!r}: {a.get(k)} -> {b.get(k)}")
        return out
