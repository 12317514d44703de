"""Parameter and MAC counts, measured by running the model's shapes (no arithmetic) through a dispatch mode."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map


def _prod(xs: Sequence[int]) -> int:
    return int(math.prod(xs))


def _macs(name: str, args: tuple, out: Any) -> int:
    if name == "convolution":
        x, w, transposed, groups = args[0], args[1], bool(args[6]), int(args[8])
        k = _prod(w.shape[2:])
        if transposed:
            return _prod(x.shape) * (w.shape[1]) * k
        return _prod(out.shape) * w.shape[1] * k
    if name in ("mm", "bmm"):
        return _prod(out.shape) * args[0].shape[-1]
    if name in ("addmm", "baddbmm"):
        return _prod(out.shape) * args[1].shape[-1]
    if name.startswith("_scaled_dot_product"):
        q, k, v = args[0], args[1], args[2]
        return _prod(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    return 0


class MacCounter(TorchDispatchMode):
    """Counts multiply-accumulates of convolutions, matrix products and fused attention."""

    HEAVY = ("convolution", "mm", "bmm", "addmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_efficient_attention")

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in self.HEAVY:
            meta = tree_map(lambda a: a.to("meta") if isinstance(a, torch.Tensor) else a, (args, kwargs))
            out = func(*meta[0], **meta[1])
            first = out[0] if isinstance(out, (tuple, list)) else out
            self.macs += _macs(name, args, first)
            return tree_map(lambda o: torch.zeros(o.shape, dtype=o.dtype) if isinstance(o, torch.Tensor) else o, out)
        return func(*args, **kwargs)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, inputs: Sequence[Any], forward_fn: Callable[..., Any] | None = None) -> int:
    """Multiply-accumulates of one eval forward on ``inputs`` (per batch, as given)."""
    counter = MacCounter()
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            forward_fn(model, *inputs) if forward_fn else model(*inputs)
    finally:
        model.train(was)
    return counter.macs
