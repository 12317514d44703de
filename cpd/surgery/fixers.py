"""Per-layer attribute fixers: after tensors are cut, bring each module's bookkeeping in line with them.

A fixer registers by module type with :func:`register_fixer`; the most specific registered base class wins.
Attributes that no tensor shape determines (``num_heads``, a LayerNorm without affine parameters,
``GroupNorm.num_groups``) are cut as attribute members of their groups instead.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

FIXERS: dict[type, Callable[[nn.Module, dict], None]] = {}


def register_fixer(*types: type) -> Callable[[Callable[[nn.Module, dict], None]], Callable[[nn.Module, dict], None]]:
    """Register ``fn(module, before)`` fixing a module after its tensors were cut.

    ``before`` holds the module's attributes as they were before the cut (see :func:`snapshot`).
    """

    def deco(fn: Callable[[nn.Module, dict], None]) -> Callable[[nn.Module, dict], None]:
        for t in types:
            FIXERS[t] = fn
        return fn

    return deco


def fixer_for(module: nn.Module) -> Callable[[nn.Module, dict], None] | None:
    """The fixer for ``module``'s type or its nearest registered base class."""
    for cls in type(module).__mro__:
        if cls in FIXERS:
            return FIXERS[cls]
    return None


def snapshot(module: nn.Module) -> dict:
    """The attributes a fixer may need to compare against after the cut."""
    keys = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
            "embed_dim", "num_heads", "kdim", "vdim")
    return {k: getattr(module, k) for k in keys if isinstance(getattr(module, k, None), int)}


@register_fixer(nn.Linear)
def fix_linear(m: nn.Linear, before: dict) -> None:
    m.out_features, m.in_features = m.weight.shape


@register_fixer(nn.Bilinear)
def fix_bilinear(m: nn.Bilinear, before: dict) -> None:
    m.out_features, m.in1_features, m.in2_features = m.weight.shape


@register_fixer(nn.modules.conv._ConvNd)
def fix_conv(m: nn.modules.conv._ConvNd, before: dict) -> None:
    w = m.weight
    if m.transposed:
        m.in_channels = w.shape[0]
        m.out_channels = w.shape[1] * m.groups
        return
    old_groups, old_in = before["groups"], before["in_channels"]
    if old_groups > 1 and old_groups == old_in:
        # depthwise: one group per input channel, each with a fixed multiplier of outputs
        mult = before["out_channels"] // old_groups
        m.groups = w.shape[0] // mult
    m.out_channels = w.shape[0]
    m.in_channels = w.shape[1] * m.groups


@register_fixer(nn.modules.batchnorm._NormBase)
def fix_batchnorm(m: nn.modules.batchnorm._NormBase, before: dict) -> None:
    ref = m.weight if m.weight is not None else m.running_mean
    if ref is not None:
        m.num_features = ref.shape[0]


@register_fixer(nn.LayerNorm)
def fix_layernorm(m: nn.LayerNorm, before: dict) -> None:
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)


if hasattr(nn, "RMSNorm"):

    @register_fixer(nn.RMSNorm)
    def fix_rmsnorm(m: nn.Module, before: dict) -> None:
        if m.weight is not None:
            m.normalized_shape = tuple(m.weight.shape)


@register_fixer(nn.GroupNorm)
def fix_groupnorm(m: nn.GroupNorm, before: dict) -> None:
    if m.weight is not None:
        m.num_channels = m.weight.shape[0]


@register_fixer(nn.PReLU)
def fix_prelu(m: nn.PReLU, before: dict) -> None:
    m.num_parameters = m.weight.numel()


@register_fixer(nn.Embedding)
def fix_embedding(m: nn.Embedding, before: dict) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape
