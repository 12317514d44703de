"""How cpd calls a model: the one place that knows about ``forward_fn``.

Every part of cpd that runs a model (the tracer, comb's cut verification, ``check``, the MAC counter, the
ONNX export) takes the same ``forward_fn``: ``forward_fn(model, *inputs)`` returns every output that
matters (all heads of a segmentor, say); without one the model is called as ``model(*inputs)``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cpd.graph import shape_only as _shape_only

#: ``forward_fn(model, *inputs) -> outputs``
ForwardFn = Callable[..., Any]


def call_model(model: nn.Module, inputs: Sequence[Any], forward_fn: ForwardFn | None = None) -> Any:
    """``forward_fn(model, *inputs)``, or ``model(*inputs)`` without a ``forward_fn``."""
    return forward_fn(model, *inputs) if forward_fn is not None else model(*inputs)


def output_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a (possibly nested) model output, in order."""
    return [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]


class ShapeOnly(TorchDispatchMode):
    """Run heavy operators on the meta device and return zeros: enough to check that shapes still fit."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _shape_only.call(func, args, kwargs or {}, True)


def run_forward(model: nn.Module, inputs: Sequence[Any], forward_fn: ForwardFn | None = None,
                shape_only: bool = False) -> list[torch.Tensor]:
    """Call the model in eval mode without gradients and return its output tensors, flattened.

    The random generator is forked and seeded, so models that draw random numbers in forward draw the
    same ones as in the trace and the masked reference.

    Args:
        model: the model (its mode is restored afterwards).
        inputs: inputs of one forward call.
        forward_fn: see :func:`call_model`.
        shape_only: skip the arithmetic of heavy operators (outputs then carry shapes, not values).

    Returns:
        The output tensors.
    """
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if shape_only:
                with ShapeOnly():
                    out = call_model(model, inputs, forward_fn)
            else:
                out = call_model(model, inputs, forward_fn)
    finally:
        model.train(was)
    return output_tensors(out)
