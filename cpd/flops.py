"""Parameter and MAC counts, measured by running the model's shapes (no arithmetic) through a dispatch mode."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from cpd.graph.forward import call_model


def _prod(xs: Sequence[int]) -> int:
    return int(math.prod(xs))


def _macs(name: str, args: tuple, out: Any) -> int:
    if name == "convolution":
        # every output (input, when transposed) element takes one MAC per weight element of its group
        x, w, transposed = args[0], args[1], bool(args[6])
        k = _prod(w.shape[2:])
        if transposed:
            return _prod(x.shape) * w.shape[1] * k
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
            # zeros on the inputs' device: a model and inputs on the meta device are counted entirely there
            dev = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
            return tree_map(lambda o: torch.zeros(o.shape, dtype=o.dtype, device=dev) if isinstance(o, torch.Tensor)
                            else o, out)
        return func(*args, **kwargs)


class ParamMacCounter(MacCounter):
    """A :class:`MacCounter` that also attributes each product's MACs to the parameter it multiplies.

    A parameter is recognised by its storage, so views of it (``weight.t()``, ``in_proj_weight.chunk(3)``)
    count as the parameter; a product of two activations (attention scores) is attributed to none.
    """

    def __init__(self, storages: dict[int, str]) -> None:
        super().__init__()
        self.storages = storages
        self.by_param: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.HEAVY:
            before = self.macs
            operands = (args[1],) if name == "convolution" else args[:3] if name.startswith("_scaled") else (
                args[1:3] if name in ("addmm", "baddbmm") else args[:2])
            out = super().__torch_dispatch__(func, types, args, kwargs)
            for t in operands:
                owner = self.storages.get(t.untyped_storage().data_ptr()) if isinstance(t, torch.Tensor) else None
                if owner is not None:
                    self.by_param[owner] = self.by_param.get(owner, 0) + self.macs - before
                    break
            return out
        return super().__torch_dispatch__(func, types, args, kwargs)


#: operations whose output is a view of their input, or a cast: no memory traffic of their own to count
VIEWS = frozenset({"view", "_unsafe_view", "t", "permute", "expand", "select", "slice", "unsqueeze", "squeeze",
                   "transpose", "detach", "alias", "as_strided", "split", "split_with_sizes", "chunk", "unbind",
                   "lift_fresh", "_to_copy"})


class WorkCounter(MacCounter):
    """A :class:`MacCounter` that also counts *elements*: the outputs of every operation that is neither a
    counted product nor a view (softmax, norms, activations, additions, copies), the memory-bound work a
    MAC count does not see."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        name = func.overloadpacket.__name__
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if name not in self.HEAVY and name not in VIEWS and isinstance(first, torch.Tensor):
            self.elements += first.numel()
        return out


def count_param_macs(model: nn.Module, inputs: Sequence[Any],
                     forward_fn: Callable[..., Any] | None = None) -> tuple[dict[str, int], int]:
    """MACs of one eval forward, split by the parameter each product multiplies.

    Args:
        model: the model.
        inputs: inputs of one forward call.
        forward_fn: ``forward_fn(model, *inputs)`` (default ``model(*inputs)``).

    Returns:
        ``(macs per parameter name, total MACs)``; the total also holds the products that multiply no
        parameter (attention scores), which the per-parameter counts leave out.
    """
    storages: dict[int, str] = {}
    for name, p in model.named_parameters():
        storages.setdefault(p.untyped_storage().data_ptr(), name)
    counter = _run(ParamMacCounter(storages), model, inputs, forward_fn)
    return counter.by_param, counter.macs


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, inputs: Sequence[Any], forward_fn: Callable[..., Any] | None = None) -> int:
    """Multiply-accumulates of one eval forward on ``inputs`` (per batch, as given)."""
    return _run(MacCounter(), model, inputs, forward_fn).macs


def count_work(model: nn.Module, inputs: Sequence[Any],
               forward_fn: Callable[..., Any] | None = None) -> tuple[int, int]:
    """``(MACs, elements)`` of one eval forward on ``inputs`` (:class:`WorkCounter`)."""
    counter = _run(WorkCounter(), model, inputs, forward_fn)
    return counter.macs, counter.elements


def _run(counter: MacCounter, model: nn.Module, inputs: Sequence[Any],
         forward_fn: Callable[..., Any] | None) -> MacCounter:
    """One eval forward without gradients under ``counter``; the model's mode is restored."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            call_model(model, inputs, forward_fn)
    finally:
        model.train(was)
    return counter
