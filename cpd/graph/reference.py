"""The exact masked reference: run the unpruned model with some units made dead.

The label tracer replays the trace with real arithmetic; after every operator the elements that belong to
a removed unit are set to zero, and statistics over labelled axes (LayerNorm, GroupNorm with one group,
mean/var, softmax, max) are computed over live elements only.  The result is what the physically pruned
model must compute, derived without any surgery: the invariant ``masked == pruned`` checks the cut.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from cpd.graph import shape_only
from cpd.graph.fields import align, support
from cpd.graph.group import DependencyGraph
from cpd.graph.labels import LabelSpace
from cpd.graph.tracer import LabelTracer, TraceContext, run_traced


class MaskedTracer(LabelTracer):
    """Label tracer that zeroes dead elements and keeps statistics to live ones."""

    def __init__(self, space: LabelSpace, dead: np.ndarray) -> None:
        super().__init__(space, shape_only=False)
        self.dead = torch.as_tensor(dead, dtype=torch.bool)

    def dead_mask(self, t: torch.Tensor, fields: list[torch.Tensor] | None = None) -> torch.Tensor | None:
        """Boolean mask (broadcastable to ``t``) of the elements of ``t`` that belong to dead units."""
        if fields is None:
            entry = self.fields.get(id(t))
            fields = [align(f, t.dim()) for f in entry[1]] if entry else []
        mask = None
        for f in fields:
            d = self.dead[f.clamp(max=len(self.dead) - 1)] & (f < len(self.dead)) & (f != 0)
            if bool(d.any()):
                mask = d if mask is None else mask | d
        return mask

    def _live_stat(self, func, args, kwargs):
        name = func.overloadpacket.__name__
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if x is None or not x.is_floating_point():
            return None
        mask = self.dead_mask(x)
        if mask is None:
            return None
        live = (~mask).to(x.dtype).expand_as(x)
        if name == "native_layer_norm":
            shape, w, b, eps = args[1], args[2], args[3], args[4]
            dims = tuple(range(x.dim() - len(shape), x.dim()))
            cnt = live.sum(dims, keepdim=True).clamp(min=1)
            mean = (x * live).sum(dims, keepdim=True) / cnt
            var = (((x - mean) * live) ** 2).sum(dims, keepdim=True) / cnt
            rstd = torch.rsqrt(var + eps)
            y = (x - mean) * rstd
            if w is not None:
                y = y * w
            if b is not None:
                y = y + b
            return y * live, mean, rstd
        if name == "native_group_norm" and args[6] == 1:  # one group: statistics over every live channel
            w, b, n, c, eps = args[1], args[2], args[3], args[4], args[7]
            dims = tuple(range(1, x.dim()))
            cnt = live.sum(dims, keepdim=True).clamp(min=1)
            mean = (x * live).sum(dims, keepdim=True) / cnt
            var = (((x - mean) * live) ** 2).sum(dims, keepdim=True) / cnt
            rstd = torch.rsqrt(var + eps)
            y = (x - mean) * rstd
            shape = [1, c] + [1] * (x.dim() - 2)
            if w is not None:
                y = y * w.reshape(shape)
            if b is not None:
                y = y + b.reshape(shape)
            return y * live, mean.reshape(n, 1), rstd.reshape(n, 1)
        if name in ("mean", "var", "std") and len(args) > 1 and args[1] is not None:
            dims = [d % x.dim() for d in (args[1] if isinstance(args[1], (list, tuple)) else [args[1]])]
            keep = kwargs.get("keepdim", args[2] if len(args) > 2 and isinstance(args[2], bool) else False)
            if name != "mean":
                keep = kwargs.get("keepdim", False)
            cnt = live.sum(dims, keepdim=True)
            mean = (x * live).sum(dims, keepdim=True) / cnt.clamp(min=1)
            if name == "mean":
                out = mean
            else:
                corr = kwargs.get("correction", 1)
                corr = 1 if corr is None else corr
                out = (((x - mean) * live) ** 2).sum(dims, keepdim=True) / (cnt - corr).clamp(min=1)
                if name == "std":
                    out = out.sqrt()
            return out if keep else out.squeeze(dims)
        if name in ("_softmax", "_log_softmax", "softmax", "log_softmax", "_safe_softmax"):
            return func(x.masked_fill(mask, float("-inf")), *args[1:], **kwargs).masked_fill(mask, 0.0)
        if name in ("amax", "max") and len(args) > 1:
            return func(x.masked_fill(mask, float("-inf")), *args[1:], **kwargs)
        if name in ("amin", "min") and len(args) > 1:
            return func(x.masked_fill(mask, float("inf")), *args[1:], **kwargs)
        return None

    def _run(self, func, args, kwargs):
        if self.training_pass:  # that pass only replays label numbering: its values are never used
            return shape_only.call(func, args, kwargs, True)
        special = self._live_stat(func, args, kwargs)
        if special is not None:
            return special
        return func(*args, **kwargs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        leaves = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if not any(id(o) in self.fields for o in leaves):
            return out
        if _is_view(func):
            # a view shares its base's memory, whose dead elements are zero already; a masked copy in its place
            # would lose writes through the view (``x[:, 1:] = ...``: TNT's patch embedding)
            return out
        fixed = []
        for o in tree_flatten(out)[0]:
            if isinstance(o, torch.Tensor) and o.is_floating_point() and id(o) in self.fields:
                mask = self.dead_mask(o)
                if mask is not None:
                    fields = self.fields[id(o)][1]
                    if any(o is a for a in args if isinstance(a, torch.Tensor)):
                        o.masked_fill_(mask, 0.0)  # in-place operator: the caller keeps this object
                    else:
                        o = o.masked_fill(mask, 0.0)
                        self.set_fields(o, fields)
            fixed.append(o)
        if isinstance(out, torch.Tensor):
            return fixed[0]
        if isinstance(out, (tuple, list)):
            flat = iter(fixed)
            return type(out)(next(flat) if isinstance(x, torch.Tensor) else x for x in out) if all(
                not isinstance(x, (tuple, list)) for x in out) else out
        return out


def _is_view(func: Any) -> bool:
    """Whether the operator returns a view of an input without writing it (``slice``, ``view``, ``select``)."""
    schema = func._schema
    return any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


def dead_labels(graph: DependencyGraph, plan: Mapping[int, Sequence[int]]) -> np.ndarray:
    """Boolean array over the labels of ``graph``'s trace: True where the label's unit is removed."""
    if graph.label_units is None:
        raise ValueError("this graph has no trace labels (it was loaded from JSON); comb the model again")
    lu = graph.label_units
    dead = np.zeros(len(lu), dtype=bool)
    for gid, units in plan.items():
        dead |= (lu[:, 0] == int(gid)) & np.isin(lu[:, 1], np.asarray(list(units), dtype=np.int64))
    return dead


def zero_members_(model: nn.Module, graph: DependencyGraph, plan: Mapping[int, Sequence[int]]) -> None:
    """Set to zero, in place, every parameter and buffer slice that belongs to a removed unit."""
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    with torch.no_grad():
        for gid, units in plan.items():
            for m in graph.group(int(gid)).param_members():
                idx = torch.as_tensor(m.indices(list(units)), dtype=torch.long)
                if idx.numel():
                    params[m.name].index_fill_(m.dim, idx, 0.0)


def masked_forward(model: nn.Module, graph: DependencyGraph, plan: Mapping[int, Sequence[int]],
                   inputs: Sequence[Any], forward_fn: Callable[..., Any] | None = None) -> list[torch.Tensor]:
    """Outputs of ``model`` (unchanged) with the units of ``plan`` dead: what the pruned model must return.

    ``model`` must be the one ``graph`` was combed from (labels are re-derived in the same order).
    """
    import copy

    ref = copy.deepcopy(model)
    zero_members_(ref, graph, plan)
    tracer = MaskedTracer(LabelSpace(), dead_labels(graph, plan))
    _, outs = run_traced(ref, tracer, tuple(inputs), forward_fn)
    out = outs[-1]
    return [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]


__all__ = ["MaskedTracer", "TraceContext", "dead_labels", "masked_forward", "support", "zero_members_"]
