"""Shape-only execution: run an operator on the meta device and return zeros of the right shape.

Label rules read the *values* of integer tensors only (indices); float results only need their shapes, so an
operator with an integer output (``topk``'s indices) always runs for real.
Running large float operators for shapes alone makes tracing a 512x512 segmentation model cheap.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map

#: operators always run for shapes only (the heavy ones), whatever their size
HEAVY = {"convolution", "mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu",
         "_scaled_dot_product_efficient_attention", "_native_multi_head_attention"}
#: float outputs at least this large are computed for shapes only, unless the operator aliases or mutates
MIN_ELEMENTS = 1 << 15


def _shape_only_ok(func: Any, args: tuple, kwargs: dict) -> bool:
    name = func.overloadpacket.__name__
    if name in HEAVY:
        return True
    if name.endswith("_") or "out" in kwargs:
        return False
    schema = func._schema
    if any(r.alias_info is not None for r in schema.returns) or any(
            a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
        return False
    tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
    if not tensors or not all(t.is_floating_point() for t in tensors):
        return False
    return max(t.numel() for t in tensors) >= MIN_ELEMENTS


def call(func: Any, args: tuple, kwargs: dict, shape_only: bool) -> Any:
    """Run ``func``; with ``shape_only``, big float operators return zeros of the right shapes instead."""
    if shape_only and _shape_only_ok(func, args, kwargs):
        try:
            meta = tree_map(lambda a: a.to("meta") if isinstance(a, torch.Tensor) else a, (args, kwargs))
            out = func(*meta[0], **meta[1])
        except (NotImplementedError, RuntimeError):
            return func(*args, **kwargs)
        if any(isinstance(o, torch.Tensor) and not o.is_floating_point() for o in tree_flatten(out)[0]):
            # indices (topk, sort, max with dim): rules and later operators read their values
            return func(*args, **kwargs)
        # uninitialised memory: touching gigabytes to write zeros would cost more than the trace itself
        return tree_map(lambda o: torch.empty(o.shape, dtype=o.dtype) if isinstance(o, torch.Tensor) else o, out)
    return func(*args, **kwargs)
