"""Safe model loading: checkpoints, safetensors, timm/MONAI architectures by name, ONNX.

``load_model`` is the one entry point the audit uses to get a model::

    load_model("ckpt.pt", "resnet18")                 # state dict into a timm architecture
    load_model("ckpt.ckpt", "monai:resnet10", spatial_dims=3)
    load_model("weights.safetensors", my_module)      # into an nn.Module you built
    load_model("model.onnx", input_layout="channels_last", output="probabilities")

Safety: ``.pt/.pth/.ckpt`` files are pickles, and unpickling can run arbitrary code, so they
are read with ``torch.load(weights_only=True)``; anything beyond tensors and plain containers
raises :class:`UnsafeCheckpointError` unless ``trust_checkpoint=True`` (CLI:
``--trust-checkpoint``). ``.safetensors`` and ``.onnx`` hold no code and need no trust.

Returned models carry a :class:`ModelInterface` (input layout, output kind, score) as
``model.medaudit_interface``, which every instrument honours. ``ModelInterface``,
``AuditAdapter``, ``as_audit_model`` and ``model_interface`` are re-exported from
:mod:`probes.core.model`, where they are defined.

A folder written by the trainers or by ``audit demo`` (``model.safetensors`` beside a
``model_card.json`` naming the architecture and its arguments) loads in one line with
``audit.training.load_trained(folder)``.
"""

from __future__ import annotations

import difflib
import inspect
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from probes.core.errors import AuditInputError, InputTypeError, OptionError
from probes.core.model import (
    AuditAdapter,
    InputLayout,
    ModelInterface,
    OutputKind,
    Score,
    as_audit_model,
    model_interface,
)

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "AuditAdapter",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "ModelInterface",
    "UnsafeCheckpointError",
    "as_audit_model",
    "load_model",
    "model_interface",
    "save_state_dict",
]

TORCH_EXTENSIONS = (".pt", ".pth", ".ckpt")
SUPPORTED_EXTENSIONS = TORCH_EXTENSIONS + (".safetensors", ".onnx")

# Where training frameworks nest the weights: Lightning ("state_dict"), common hand-written
# trainers ("model_state_dict", "model").
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
# Prefixes added by DataParallel/DDP ("module."), a LightningModule holding ``self.model``
# ("model.") and torch.compile ("_orig_mod.").
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")
_SHOW = 5  # how many keys an error message lists before "... and N more"
_MODEL_CARD = "model_card.json"  # written beside the checkpoint by audit.training

Arch = str | nn.Module | Callable[[], nn.Module] | None


class _CheckpointError(AuditInputError):
    """A problem with the checkpoint file: ``name`` is the argument (``"path"``), ``got`` the file."""

    def __init__(self, message: str, path: str | Path | None = None, expected: str = "a readable checkpoint"):
        # the message names the file already; the argument is in ``name`` (no "path:" prefix)
        ValueError.__init__(self, message)
        self.name, self.got, self.expected = "path", None if path is None else str(path), expected


class UnsafeCheckpointError(_CheckpointError):
    """A checkpoint needs arbitrary unpickling (code execution) and was not trusted."""


class CheckpointReadError(_CheckpointError):
    """A checkpoint file is damaged or is not what its extension says (empty, truncated, text)."""


class CheckpointMismatchError(_CheckpointError):
    """A state dict does not fit the architecture (missing/unexpected keys, shapes)."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple, tuple]], path: str | Path | None = None):
        super().__init__(message, path, "a state dict that fits arch")
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


# --------------------------------------------------------------------------- loading
def load_model(
    path: str | Path | None = None,
    arch: Arch = None,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    trust_checkpoint: bool = False,
    input_layout: InputLayout = "channels_first",
    output: OutputKind = "logits",
    score: Score = "log_probability",
    **arch_kwargs: Any,
) -> nn.Module:
    """Load a model for auditing; returned on the CPU, in **eval mode**, never pretrained.

    Args:
        path: a checkpoint. ``.pt/.pth/.ckpt``: a state dict, possibly under ``"state_dict"``
            (Lightning), ``"model_state_dict"`` or ``"model"``, with any ``module.``/``model.``/
            ``_orig_mod.`` prefix stripped (only when every key has it and stripping matches
            the architecture better); with ``trust_checkpoint=True`` also a pickled whole
            ``nn.Module``. ``.safetensors``: a state dict. ``.onnx``: converted with onnx2torch
            into a ``torch.fx.GraphModule`` (``arch`` not needed; its module names may
            contain ``/``). ``None``: a freshly initialised ``arch``.
        arch: what to load a state dict into: a timm model name (``"resnet18"``); a MONAI
            network ``"monai:<name>"`` from ``monai.networks.nets`` (``"monai:resnet10"``,
            ``"monai:UNet"``); an ``nn.Module`` instance (loaded in place); or a callable
            returning one (called with ``arch_kwargs``).
        num_classes, in_chans: for timm/MONAI names; MONAI gets them under whichever of
            ``num_classes/out_channels/classes`` and ``in_channels/n_input_channels`` it takes
            (any of these spellings is accepted in ``arch_kwargs`` too). Not given but a state
            dict is: ``in_chans`` = dim 1 of the first conv weight (timm: its config's
            ``first_conv``; else the first weight with >= 3 dims); ``num_classes`` = rows of
            the classifier weight (timm: config's ``classifier``, absent = headless, 0; MONAI:
            the last 2-D weight, if any). MONAI ``spatial_dims`` = first conv weight dims - 2.
        trust_checkpoint: allow full unpickling (``torch.load(weights_only=False)``), which can
            run arbitrary code from the file. Only for files from a trusted source.
        input_layout, output, score: the model's :class:`ModelInterface`, set as
            ``model.medaudit_interface`` and honoured by every instrument (``score="logit"``
            explains a probability model's final softmax at its input).
        **arch_kwargs: passed to ``timm.create_model``, the MONAI constructor or the callable.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported extension, missing or unknown ``arch`` (with close matches),
            bad interface values. :class:`UnsafeCheckpointError` (a ``ValueError``): the file
            needs unsafe unpickling and ``trust_checkpoint`` is False.
            :class:`CheckpointMismatchError` (a ``ValueError``): the state dict does not fit
            ``arch``; lists missing/unexpected keys and shape mismatches.
    """
    interface = ModelInterface(input_layout, output, score)  # validates before any heavy work
    if path is None:
        if arch is None:
            raise ValueError("load_model needs a checkpoint path, an arch, or both")
        model, _ = _build_arch(arch, num_classes, in_chans, arch_kwargs, state_dict=None)
        return _finish(model, interface)

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS or not path.is_file():
        raise CheckpointReadError(f"cannot load {path}: unsupported file type {ext or '(none)'!r}; "
                                  f"supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}", path,
                                  f"a file ending in {', '.join(SUPPORTED_EXTENSIONS)}")

    if ext == ".onnx":
        if arch is not None or num_classes is not None or in_chans is not None or arch_kwargs:
            warnings.warn(f"{path.name}: an ONNX file defines its own architecture; "
                          "arch, num_classes, in_chans and arch_kwargs are ignored", stacklevel=2)
        return _finish(_load_onnx(path), interface)

    if ext == ".safetensors":
        from safetensors.torch import load_file
        try:
            loaded: Any = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError for damaged files
            raise CheckpointReadError(f"cannot read {path} as safetensors (empty, truncated or not a "
                                      f"safetensors file): {err}", path) from err
    else:
        loaded = _extract(_read_torch(path, trust_checkpoint), path)
    if isinstance(loaded, nn.Module):  # a trusted pickle of the whole model
        if arch is not None:
            warnings.warn(f"{path.name} holds a whole nn.Module; arch is ignored", stacklevel=2)
        return _finish(loaded, interface)

    if arch is None:
        raise ValueError(
            f"{path} holds a state dict ({len(loaded)} tensors, e.g. {next(iter(loaded))!r}), "
            "which needs an architecture: pass arch= a timm name ('resnet18'), a MONAI "
            "network ('monai:resnet10'), an nn.Module or a callable returning one")
    candidates = _strip_candidates(loaded)
    # Infer sizes from the most-stripped keys: they are the ones that look like a bare model.
    model, notes = _build_arch(arch, num_classes, in_chans, arch_kwargs, candidates[-1])
    _load_strict(model, candidates, notes, path)
    return _finish(model, interface)


def save_state_dict(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict to ``.safetensors`` or ``.pt/.pth/.ckpt`` (by extension).

    An :class:`AuditAdapter` is unwrapped first so keys carry no ``model.`` prefix. Both
    formats load back with :func:`load_model` without ``trust_checkpoint``.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError("model", type(model).__name__, "an nn.Module",
                             message=f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(path, (str, Path)):
        raise InputTypeError("path", type(path).__name__, "a file path",
                             message=f"path must be a file path, got {type(path).__name__}")
    path, ext = Path(path), Path(path).suffix.lower()
    if isinstance(model, AuditAdapter):
        model = model.model
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".safetensors":
        from safetensors.torch import save_file
        # safetensors refuses tensors sharing storage (tied weights); private copies fix that.
        save_file({k: v.contiguous().clone() for k, v in state.items()}, str(path))
    elif ext in TORCH_EXTENSIONS:
        torch.save(state, path)
    else:
        raise OptionError("path", str(path), f".safetensors or one of {', '.join(TORCH_EXTENSIONS)}",
                          message=f"cannot save to {path}: unsupported extension {ext or '(none)'!r}; "
                                  f"use .safetensors or one of {', '.join(TORCH_EXTENSIONS)}")
    return path


def _finish(model: nn.Module, interface: ModelInterface) -> nn.Module:
    model.eval().to("cpu")
    model.medaudit_interface = interface
    return model


# --------------------------------------------------------------------------- checkpoints
def _read_torch(path: Path, trust: bool) -> Any:
    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive (or, before torch 1.6, a pickle starting with PROTO 0x80):
    # anything else is not a checkpoint, and the unpickler's complaint would wrongly suggest code
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":
        raise CheckpointReadError(f"cannot read {path}: it is not a PyTorch checkpoint (" + (
            "the file is empty" if not head else "neither a zip archive nor a pickle") + ")", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        if "Unsupported operand" in str(err):  # garbage bytes, not a forbidden class
            raise CheckpointReadError(f"cannot read {path}: it is not a PyTorch checkpoint (damaged pickle: "
                                      f"{_unsupported(err)})", path) from err
        if trust:
            raise CheckpointReadError(f"could not unpickle {path}: {err}", path) from err
        # torch's message is long and recommends weights_only=False; keep only its reason.
        reason = [ln.strip() for ln in str(err).splitlines()
                  if "GLOBAL" in ln or "Unsupported" in ln]
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is not a plain tensor checkpoint, and unpickling it "
            f"could execute arbitrary code{' (' + '; '.join(reason) + ')' if reason else ''}. "
            "If you trust its source, pass trust_checkpoint=True (CLI: --trust-checkpoint); "
            "better, re-save only the state dict, or as .safetensors", path, "a plain tensor checkpoint") from err
    except (RuntimeError, EOFError) as err:  # truncated or corrupt archive
        raise CheckpointReadError(f"could not read checkpoint {path}: {err}", path) from err
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
        # not a torch archive at all (e.g. a text file): the legacy unpickler fails on its bytes
        raise CheckpointReadError(f"cannot read {path}: it is not a PyTorch checkpoint "
                                  f"({type(err).__name__}: {err})", path) from err


def _unsupported(err: Exception) -> str:
    return "; ".join(ln.strip() for ln in str(err).splitlines() if "Unsupported" in ln) or type(err).__name__


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()))


def _extract(obj: Any, path: Path) -> nn.Module | dict[str, Tensor]:
    """The module or state dict inside a loaded checkpoint (plain or wrapped)."""
    is_map = isinstance(obj, Mapping)
    for inner in [obj] + ([obj.get(k) for k in _WRAPPER_KEYS] if is_map else []):
        if isinstance(inner, nn.Module):
            return inner
        if _is_state_dict(inner):
            return dict(inner)
    found = f"a dict with keys {list(obj)[:10]}" if is_map else f"a {type(obj).__name__}"
    raise CheckpointReadError(f"{path}: expected a state dict (str -> tensor), possibly under one of "
                              f"{list(_WRAPPER_KEYS)}, or an nn.Module; found {found}", path, "a state dict")


def _strip_candidates(state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """The state dict, then with each wrapper prefix shared by all keys stripped in turn."""
    out = [state]
    while True:
        cur = out[-1]
        prefix = next((p for p in _STRIP_PREFIXES if all(k.startswith(p) for k in cur)), None)
        if prefix is None:
            return out
        out.append({k[len(prefix):]: v for k, v in cur.items()})


def _load_strict(model: nn.Module, candidates: list[dict[str, Tensor]], notes: list[str],
                 path: Path) -> None:
    own = model.state_dict()
    # Prefer the most-stripped candidate unless a less-stripped one fits better (a model
    # whose own top-level submodule is called "model" keeps its prefix).
    state = max(reversed(candidates), key=lambda c: len(c.keys() & own.keys()))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        lines = [(f"state dict from {path} does not fit {type(model).__name__}: "
                  f"{len(mismatched)} shape mismatch(es), {len(missing)} missing key(s), "
                  f"{len(unexpected)} unexpected key(s)")]
        for label, items in (
                ("shape mismatches", [f"{k!r}: checkpoint {c} vs model {m}"
                                      for k, c, m in mismatched]),
                ("missing keys", [repr(k) for k in missing]),
                ("unexpected keys", [repr(k) for k in unexpected])):
            if items:
                lines.append(f"  {label} ({len(items)}): {'; '.join(items[:_SHOW])}{_more(items)}")
        if state is not candidates[0]:
            first, bare = next(iter(candidates[0])), next(iter(state))
            lines.append(f"  (checkpoint keys compared after stripping {first[:-len(bare)]!r})")
        lines += [f"  note: {n}; pass it explicitly if that is wrong" for n in notes]
        if (path.parent / _MODEL_CARD).exists():
            lines.append(f"  note: {path.parent / _MODEL_CARD} describes this checkpoint; load the folder with "
                         f"audit.training.load_trained({str(path.parent)!r}) to use its arch and arch_kwargs")
        raise CheckpointMismatchError("\n".join(lines), missing, unexpected, mismatched, path)
    model.load_state_dict(state, strict=True)


def _more(items: list) -> str:
    return f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""


# --------------------------------------------------------------------------- architectures
def _build_arch(arch: Arch, num_classes: int | None, in_chans: int | None,
                kwargs: dict[str, Any], state_dict: dict[str, Tensor] | None
                ) -> tuple[nn.Module, list[str]]:
    """Instantiate ``arch``; returns the model and notes on what was inferred."""
    if isinstance(arch, str):
        if arch.startswith("monai:"):
            return _build_monai(arch, num_classes, in_chans, kwargs, state_dict)
        return _build_timm(arch, num_classes, in_chans, kwargs, state_dict)
    if num_classes is not None or in_chans is not None:
        raise ValueError("num_classes/in_chans only apply to timm or MONAI names; "
                         "build your module with the right sizes instead")
    if isinstance(arch, nn.Module):
        if kwargs:
            raise ValueError(f"arch is a module instance; unexpected arguments {sorted(kwargs)}")
        return arch, []
    if callable(arch):
        model = arch(**kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"arch callable returned {type(model).__name__}, not an nn.Module")
        return model, []
    raise TypeError(f"arch must be a str, an nn.Module or a callable, got {type(arch).__name__}")


def _unknown(kind: str, name: str, pool: list[str], hint: str = "") -> ValueError:
    lower: dict[str, list[str]] = {}
    for p in pool:  # case-insensitive matching; MONAI has aliases like UNet/Unet
        lower.setdefault(p.lower(), []).append(p)
    close = [p for c in difflib.get_close_matches(name.lower(), list(lower), n=5)
             for p in lower[c]][:6]
    suggestion = f". Did you mean {', '.join(map(repr, close))}?" if close else ""
    return OptionError("arch", repr(name), f"a known {kind} architecture",
                       message=f"unknown {kind} architecture {name!r}{hint}{suggestion}")


def _first_conv_key(state: dict[str, Tensor]) -> str | None:
    return next((k for k, v in state.items()
                 if k.endswith("weight") and v.ndim >= 3 and v.is_floating_point()), None)


def _last_linear_key(state: dict[str, Tensor]) -> str | None:
    keys = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return keys[-1] if keys else None


def _build_timm(name: str, num_classes: int | None, in_chans: int | None,
                kwargs: dict[str, Any], state: dict[str, Tensor] | None
                ) -> tuple[nn.Module, list[str]]:
    import timm
    if kwargs.pop("pretrained", False):
        raise ValueError("load_model never downloads weights; pass a checkpoint path instead")
    if not timm.is_model(timm.models.split_model_name_tag(name)[0]):
        hint = f" (for MONAI write 'monai:{name}')" if _monai_factory(name) is not None else ""
        raise _unknown("timm", name, timm.list_models(), hint)

    notes: list[str] = []
    if state is not None and (in_chans is None or num_classes is None):
        cfg = timm.models.get_pretrained_cfg(name)
        # Distilled models name two heads as a tuple; the first is the classifier.
        names = [n[0] if isinstance(n, (tuple, list)) and n else n
                 for n in ((cfg.first_conv, cfg.classifier) if cfg else (None, None))]
        conv, head = [f"{n}.weight" if isinstance(n, str) and n else None for n in names]
        if in_chans is None:
            key = conv if conv in state else _first_conv_key(state)
            if key is not None:
                in_chans = int(state[key].shape[1])
                notes.append(f"in_chans={in_chans} was inferred from {key!r}")
        if num_classes is None and head is not None and head not in state:
            num_classes = 0  # the config names the classifier: its absence means headless
            notes.append(f"num_classes=0 was inferred from the absence of {head!r}")
        elif num_classes is None:
            key = head if head in state else _last_linear_key(state)
            if key is not None:
                num_classes = int(state[key].shape[0])
                notes.append(f"num_classes={num_classes} was inferred from {key!r}")
    kwargs.update({k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans))
                   if v is not None})
    try:
        return timm.create_model(name, pretrained=False, **kwargs), notes
    except TypeError as err:
        raise ValueError(f"timm.create_model({name!r}, **{kwargs}) failed: {err}") from err


def _monai_factory(name: str) -> Callable[..., nn.Module] | None:
    from monai.networks import nets
    obj = getattr(nets, name, None) if not name.startswith("_") else None
    is_net = inspect.isclass(obj) and issubclass(obj, nn.Module)
    # factory functions (resnet10) qualify when their return annotation names a network
    return obj if is_net or (inspect.isfunction(obj) and _resolve_monai_return(obj)) else None


def _resolve_monai_return(fn: Callable) -> type | None:
    """The network class a MONAI factory function (``resnet10``) builds, from its annotation."""
    from monai.networks import nets
    ann = inspect.signature(fn).return_annotation
    cls = getattr(nets, ann, None) if isinstance(ann, str) else ann
    return cls if inspect.isclass(cls) and issubclass(cls, nn.Module) else None


def _accepted_params(fn: Callable) -> set[str]:
    """Keyword names ``fn`` takes, following ``**kwargs`` to the class it builds or extends."""
    sig = inspect.signature(fn)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in sig.parameters.values() if p.kind in kinds}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        target = _resolve_monai_return(fn) if inspect.isfunction(fn) else None
        if inspect.isclass(fn):  # e.g. DenseNet121(**kwargs) -> DenseNet.__init__
            target = next((b for b in fn.__mro__[1:] if "__init__" in vars(b)
                           and issubclass(b, nn.Module) and b is not nn.Module), None)
        if target is not None:
            names |= _accepted_params(target)
    return names


_IN_NAMES = ("in_channels", "n_input_channels", "in_chans")
_OUT_NAMES = ("num_classes", "out_channels", "classes")


def _route(kwargs: dict[str, Any], params: set[str], aliases: tuple[str, ...],
           value: int | None, label: str, arch: str) -> str | None:
    """Move a size given under any alias to the name the MONAI network takes."""
    given = {a: kwargs.pop(a) for a in aliases if a in kwargs}
    if value is not None:
        given[label] = value
    target = next((a for a in aliases if a in params), None)
    if not given:
        return target
    if len(set(given.values())) > 1:
        raise ValueError(f"conflicting sizes for {arch}: {given}")
    if target is None:
        raise ValueError(f"{arch} takes none of {list(aliases)}; got {given}")
    kwargs[target] = next(iter(given.values()))
    return target


def _build_monai(arch: str, num_classes: int | None, in_chans: int | None,
                 kwargs: dict[str, Any], state: dict[str, Tensor] | None
                 ) -> tuple[nn.Module, list[str]]:
    from monai.networks import nets
    name = arch.split(":", 1)[1]
    factory = _monai_factory(name)
    if factory is None:
        pool = [n for n in dir(nets) if _monai_factory(n) is not None]
        raise _unknown("MONAI", name, pool, " (not in monai.networks.nets)")
    params = _accepted_params(factory)
    kwargs = dict(kwargs)
    in_key = _route(kwargs, params, _IN_NAMES, in_chans, "in_chans", arch)
    out_key = _route(kwargs, params, _OUT_NAMES, num_classes, "num_classes", arch)

    notes: list[str] = []
    conv = _first_conv_key(state) if state is not None else None
    linear = _last_linear_key(state) if state is not None else None
    dims_key = "spatial_dims" if "spatial_dims" in params else None
    for key, source, size in ((dims_key, conv, lambda w: w.ndim - 2),
                              (in_key, conv, lambda w: int(w.shape[1])),
                              (out_key, linear, lambda w: int(w.shape[0]))):
        if key is not None and source is not None and key not in kwargs:
            kwargs[key] = size(state[source])
            notes.append(f"{key}={kwargs[key]} was inferred from {source!r}")

    if kwargs.get("pretrained"):
        raise ValueError("load_model never downloads weights; pass a checkpoint path instead")
    if "pretrained" in params:
        kwargs["pretrained"] = False
    try:
        return factory(**kwargs), notes
    except TypeError as err:
        raise ValueError(f"monai.networks.nets.{name}(**{kwargs}) failed: {err}; "
                         "pass the missing arguments to load_model as keywords") from err


# --------------------------------------------------------------------------- ONNX
def _load_onnx(path: Path) -> nn.Module:
    import onnx
    import onnx2torch
    try:
        proto = onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError for a damaged or foreign file
        raise CheckpointReadError(f"cannot read {path} as an ONNX model: {type(err).__name__}: {err}", path) from err
    _inline_identity_initializers(proto)
    _drop_needless_allowzero(proto)
    _register_opset18_reduce()
    try:
        return onnx2torch.convert(proto)
    except NotImplementedError as err:
        opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
        raise ValueError(f"onnx2torch cannot convert {path} (opsets {opsets}): {err}. "
                         "Re-exporting with torch.onnx.export(..., dynamo=False, "
                         "opset_version=17) often helps") from err


def _inline_identity_initializers(proto: Any) -> None:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer, in place.

    torch's exporter deduplicates equal constants (e.g. equal BN-folded conv biases of an
    untrained net) behind Identity nodes; onnx2torch 1.5 then fails with a KeyError.
    """
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:  # nodes are topologically sorted, so chains resolve in order
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            copy = graph.initializer.add()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            inits[copy.name] = copy
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _drop_needless_allowzero(proto: Any) -> None:
    """Clear ``allowzero=1`` on Reshapes whose constant target shape has no 0, in place.

    The dynamo exporter sets it on every Reshape and onnx2torch 1.5 refuses it; it only
    changes what a 0 in the target shape means, so without a 0 it is a no-op.
    """
    from onnx import numpy_helper
    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if (node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits
                or (numpy_helper.to_array(inits[node.input[1]]) == 0).any()):
            continue
        for attr in node.attribute:
            if attr.name == "allowzero":
                attr.i = 0


def _register_opset18_reduce() -> None:
    """Teach onnx2torch 1.5 the opset-18 Reduce ops (axes moved from attribute to input).

    torch's default (dynamo) exporter writes opset 18, whose ``ReduceMean`` (global average
    pooling) onnx2torch 1.5.15 lacks. Constant axes only; registered once, process-wide.
    """
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.node_converters.registry import add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    def convert(node: Any, graph: Any) -> Any:
        """Build a static-axes reduction (or Identity for an empty no-op reduction)."""
        keepdims = node.attributes.get("keepdims", 1)
        axes = None
        if len(node.input_values) > 1 and node.input_values[1]:
            try:
                axes = get_const_value(node.input_values[1], graph).tolist()
            except KeyError as err:
                raise NotImplementedError(f"{node.operation_type} with non-constant axes") from err
        if not axes and node.attributes.get("noop_with_empty_axes", 0):
            module: nn.Module = nn.Identity()
        else:
            module = OnnxReduceStaticAxes(node.operation_type, axes, keepdims)
        return OperationConverterResult(
            torch_module=module,
            onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))

    for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"):
        try:
            add_converter(operation_type=op, version=18)(convert)
        except ValueError:  # already registered (by us earlier, or a newer onnx2torch)
            pass
