"""Normalisation over live channels only, for the masked phase.

A zeroed channel still counts in the statistics of a LayerNorm (mean and variance over the channel axis),
of a GroupNorm with a single group and of an RMSNorm, so zeros alone do not make the masked model compute
what the cut model computes.  For each such module whose normalised axes lie in a masked group, a forward
hook recomputes the output with the mean and variance taken over live channels only, and zero at dead
channels::

    mu = sum(x * live) / n_live,   var = sum(((x - mu) * live)^2) / n_live
    y  = ((x - mu) / sqrt(var + eps) * weight + bias) * live

(RMSNorm: ``y = x / sqrt(sum(x^2 * live) / n_live + eps) * weight * live``).  Other normalisations need
nothing: batch norm is per channel, and a GroupNorm with several groups loses whole groups (comb makes a
group of channels one unit).  The hooks are plain closures: a deep copy of the masked model keeps them and
stays masked; :func:`strip_live_norms_` removes them from a copy.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cpd.prune.masks import MaskSet

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def _live_mask(name: str, mod: nn.Module, masks: MaskSet) -> torch.Tensor | None:
    """Live mask broadcastable to the normalised trailing dims of the input, None when all are live."""
    if isinstance(mod, nn.GroupNorm):
        if mod.num_groups != 1 or mod.weight is None:
            return None
        live = masks.live(f"{name}.weight", 0)
        return None if live is None else live  # channels; spatial dims are added at call time
    shape = tuple(mod.normalized_shape)
    per_dim = []
    for d in range(len(shape)):
        if getattr(mod, "weight", None) is not None:
            live = masks.live(f"{name}.weight", d)
        else:
            live = masks.live(f"{name}:normalized_shape", 0) if len(shape) == 1 else None
        per_dim.append(live)
    if all(v is None for v in per_dim):
        return None
    mask = torch.ones(shape, dtype=torch.bool)
    for d, live in enumerate(per_dim):
        if live is not None:
            view = [1] * len(shape)
            view[d] = shape[d]
            mask = mask & live.reshape(view)
    return mask


def _normalize(x: torch.Tensor, live: torch.Tensor, mod: nn.Module) -> torch.Tensor:
    if isinstance(mod, nn.GroupNorm):
        live = live.reshape((-1,) + (1,) * (x.dim() - 2))
        dims = tuple(range(1, x.dim()))
        w = None if mod.weight is None else mod.weight.reshape(live.shape)
        b = None if mod.bias is None else mod.bias.reshape(live.shape)
    else:
        dims = tuple(range(x.dim() - live.dim(), x.dim()))
        w, b = mod.weight, getattr(mod, "bias", None)
    xf = x.float()
    lv = live.to(device=x.device, dtype=xf.dtype)
    count = lv.expand(x.shape[x.dim() - len(dims):]).sum().clamp(min=1)
    eps = mod.eps if mod.eps is not None else torch.finfo(xf.dtype).eps
    if isinstance(mod, nn.RMSNorm):
        y = xf * torch.rsqrt((xf * xf * lv).sum(dims, keepdim=True) / count + eps)
    else:
        mean = (xf * lv).sum(dims, keepdim=True) / count
        var = (((xf - mean) * lv) ** 2).sum(dims, keepdim=True) / count
        y = (xf - mean) * torch.rsqrt(var + eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return (y * lv).to(x.dtype)


def attach_live_norms(model: nn.Module, masks: MaskSet) -> list[Any]:
    """Hook every LayerNorm / single-group GroupNorm / RMSNorm whose normalised axes ``masks`` covers.

    Args:
        model: the masked model.
        masks: its masks (read at every call, so later pruning steps are followed).

    Returns:
        The hook handles (``handle.remove()`` undoes one; :func:`strip_live_norms_` removes them by id).
    """
    handles = []
    for name, mod in model.named_modules():
        if not isinstance(mod, NORMS):
            continue
        keys = [(f"{name}.weight", d) for d in range(mod.weight.dim())] if getattr(mod, "weight", None) is not None \
            else [(f"{name}:normalized_shape", 0)]
        if not any(masks.covers(*k) for k in keys):
            continue
        cache: dict[str, Any] = {"version": -1, "live": None}

        def hook(mod: nn.Module, args: tuple, out: Any, name: str = name, cache: dict = cache) -> Any:
            if cache["version"] != masks.version:
                cache["live"], cache["version"] = _live_mask(name, mod, masks), masks.version
            if cache["live"] is None or not args or not isinstance(args[0], torch.Tensor):
                return None
            if cache["live"].device != args[0].device:
                cache["live"] = cache["live"].to(args[0].device)
            return _normalize(args[0], cache["live"], mod)

        handles.append(mod.register_forward_hook(hook))
    return handles


def strip_live_norms_(model: nn.Module, handles: list[Any]) -> None:
    """Remove the hooks ``handles`` name from every module of ``model`` (a copy of the masked model)."""
    ids = {h.id for h in handles}
    for mod in model.modules():
        for hid in ids & set(mod._forward_hooks):
            del mod._forward_hooks[hid]
