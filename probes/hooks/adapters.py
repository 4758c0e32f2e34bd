"""Declarative descriptions of residual blocks: where f(x), s(x), the add and the activation are.

Every residual block computes ``out = act(f(x) + s(x))``.  The hook registry needs to know,
per block *class*, which child module emits f(x) (the branch output, before the skip add),
which child emits s(x) (a projection; absent means the identity), and which child applies
the final activation (and, when that module is also used inside the branch, which of its
calls is the one after the add).  That knowledge lives here as one small table entry per
block type, in the spirit of pyvene's per-model tables, instead of ``isinstance`` chains.

Entries are keyed by the block class's qualified name (``module.QualName``) so that this
module imports neither timm, torchvision nor MONAI; subclasses match through their MRO.

Sources (read from the installed packages):
- timm ``models/resnet.py`` ``BasicBlock``/``Bottleneck``: ``bn2|bn3 -> se? -> drop_path? ->
  x += shortcut -> act2|act3`` (``se``/``drop_path``/``downsample`` may be ``None``).
- timm ``models/byobnet.py`` Basic/Bottleneck/Dark/Edge/SelfAttn blocks: ``... -> drop_path ->
  x = x + shortcut(x0) -> act``; ``shortcut`` is ``None`` when the block has no residual.
- torchvision ``models/resnet.py``: one ``relu`` module called 2 (Basic) or 3 (Bottleneck)
  times; the last call follows the add.
- MONAI ``nets/resnet.py`` ``ResNetBlock``/``ResNetBottleneck``: same pattern with ``act``.
- MONAI ``blocks/convolutions.py`` ``ResidualUnit``: ``conv(x) + residual(x)``, no activation
  after the add (so ``resid_sum`` and ``resid`` coincide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = ["BlockAdapter", "register_adapter", "find_adapter", "ADAPTERS"]


@dataclass(frozen=True)
class BlockAdapter:
    """How to find the five residual anchors inside one block class.

    Attributes:
        name: a short label for reports (e.g. ``"timm.resnet.BasicBlock"``).
        branch_out: candidate attribute names of the module whose output is f(x), in order of
            preference; the first one present (not ``None``) on the instance is used.
        shortcut: attribute holding the projection s(x); when it is ``None`` on the instance
            the meaning is given by ``shortcut_none``.
        shortcut_none: ``"identity"`` — a missing projection means s(x) = x (timm/torchvision
            ResNet ``downsample=None``); ``"no_residual"`` — the block has no skip at all (timm
            ByobNet ``shortcut=None``) and gets no anchors.
        act: attribute of the activation applied to f(x)+s(x); ``None`` when there is none.
        act_call: which call (0-based, within one block forward) of ``act`` is the one after
            the add; ``-1`` is not allowed because hooks must decide while the forward runs.
    """

    name: str
    branch_out: tuple[str, ...]
    shortcut: str
    act: str | None
    act_call: int = 0
    shortcut_none: Literal["identity", "no_residual"] = "identity"

    def __post_init__(self) -> None:
        if not self.branch_out:
            raise ValueError(f"adapter {self.name!r}: branch_out needs at least one attribute name")
        if self.act_call < 0:
            raise ValueError(f"adapter {self.name!r}: act_call must be >= 0, got {self.act_call}")
        if self.shortcut_none not in ("identity", "no_residual"):
            raise ValueError(
                f"adapter {self.name!r}: shortcut_none must be 'identity' or 'no_residual', "
                f"got {self.shortcut_none!r}"
            )

    def branch_module(self, block: nn.Module) -> str:
        """Attribute name of the module emitting f(x) on this instance (first present)."""
        for attr in self.branch_out:
            if getattr(block, attr, None) is not None:
                return attr
        raise AttributeError(
            f"adapter {self.name!r}: none of {self.branch_out} is present on "
            f"{type(block).__qualname__}"
        )

    def is_residual(self, block: nn.Module) -> bool:
        """False when the instance has no skip connection (ByobNet ``shortcut=None``)."""
        return not (getattr(block, self.shortcut, None) is None and self.shortcut_none == "no_residual")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_BYOB = dict(shortcut="shortcut", act="act", shortcut_none="no_residual")

# The tables.  Keys are qualified class names so nothing heavy is imported here.
ADAPTERS: dict[str, BlockAdapter] = {
    "timm.models.resnet.BasicBlock": BlockAdapter(
        "timm.resnet.BasicBlock", ("drop_path", "se", "bn2"), "downsample", "act2"),
    "timm.models.resnet.Bottleneck": BlockAdapter(
        "timm.resnet.Bottleneck", ("drop_path", "se", "bn3"), "downsample", "act3"),
    "timm.models.byobnet.BasicBlock": BlockAdapter(
        "timm.byobnet.BasicBlock", ("drop_path",), **_BYOB),
    "timm.models.byobnet.BottleneckBlock": BlockAdapter(
        "timm.byobnet.BottleneckBlock", ("drop_path",), **_BYOB),
    "timm.models.byobnet.DarkBlock": BlockAdapter(
        "timm.byobnet.DarkBlock", ("drop_path",), **_BYOB),
    "timm.models.byobnet.EdgeBlock": BlockAdapter(
        "timm.byobnet.EdgeBlock", ("drop_path",), **_BYOB),
    "timm.models.byobnet.SelfAttnBlock": BlockAdapter(
        "timm.byobnet.SelfAttnBlock", ("drop_path",), **_BYOB),
    "torchvision.models.resnet.BasicBlock": BlockAdapter(
        "torchvision.resnet.BasicBlock", ("bn2",), "downsample", "relu", act_call=1),
    "torchvision.models.resnet.Bottleneck": BlockAdapter(
        "torchvision.resnet.Bottleneck", ("bn3",), "downsample", "relu", act_call=2),
    "monai.networks.nets.resnet.ResNetBlock": BlockAdapter(
        "monai.resnet.ResNetBlock", ("bn2",), "downsample", "act", act_call=1),
    "monai.networks.nets.resnet.ResNetBottleneck": BlockAdapter(
        "monai.resnet.ResNetBottleneck", ("bn3",), "downsample", "act", act_call=2),
    "monai.networks.blocks.convolutions.ResidualUnit": BlockAdapter(
        "monai.ResidualUnit", ("conv",), "residual", None),
}


def register_adapter(block_cls: type | str, adapter: BlockAdapter) -> None:
    """Register (or replace) the adapter for a block class, by class or qualified name.

    Example::

        register_adapter(MyBlock, BlockAdapter("MyBlock", ("bn2",), "proj", "act"))
    """
    if not isinstance(adapter, BlockAdapter):
        raise TypeError(f"adapter must be a BlockAdapter, got {type(adapter).__name__}")
    key = block_cls if isinstance(block_cls, str) else _qualname(block_cls)
    ADAPTERS[key] = adapter


def find_adapter(module: nn.Module, extra: dict[str, BlockAdapter] | None = None) -> BlockAdapter | None:
    """The adapter for ``module``'s class (or nearest registered base class), else ``None``."""
    tables = [extra or {}, ADAPTERS]
    for cls in type(module).__mro__:
        key = _qualname(cls)
        for table in tables:
            if key in table:
                return table[key]
    return None
