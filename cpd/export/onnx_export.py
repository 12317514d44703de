"""Export a model to an ONNX file with a dynamic batch axis.

The model is exported with torch's dynamo exporter (``torch.export`` underneath); the TorchScript
exporter fails on UperNet's pooling at 512x512. Whatever the model or ``forward_fn`` returns (a
tensor, a list of logits, nested tuples) is flattened to a tuple of tensors, the graph's outputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from cpd.files import write_atomic
from cpd.graph.forward import ForwardFn, call_model

Inputs = torch.Tensor | Sequence[torch.Tensor]

_NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration", "onnxscript.optimizer._constant_folding")
# A batch of 1 lets torch.export specialise the batch to a constant; 2 keeps it symbolic.
EXPORT_BATCH = 2


def as_inputs(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """Normalise example inputs to a non-empty tuple of tensors sharing one batch size.

    Args:
        inputs: a tensor, or a sequence of tensors whose first axis is the batch.

    Returns:
        The inputs as a tuple.

    Raises:
        TypeError: an input is not a tensor.
        ValueError: there are no inputs, an input has no batch axis, or batch sizes differ.
    """
    items = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if not items:
        raise ValueError("need at least one example input")
    for i, item in enumerate(items):
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"input {i} is a {type(item).__name__}, expected a tensor")
        if item.dim() == 0:
            raise ValueError(f"input {i} is a scalar; every input needs a leading batch axis")
    batches = {item.shape[0] for item in items}
    if len(batches) != 1:
        raise ValueError(f"inputs must share one batch size, got {[tuple(t.shape) for t in items]}")
    return items


def input_names(count: int) -> list[str]:
    """Names of the graph inputs: ``input`` for one input, else ``input0``, ``input1``, ..."""
    return ["input"] if count == 1 else [f"input{i}" for i in range(count)]


class TupleOutputs(nn.Module):
    """Wrap a model so that its forward returns a flat tuple of tensors.

    Args:
        model: the wrapped model (a submodule, so its parameters become the graph's weights).
        forward_fn: ``forward_fn(model, *inputs)``; ``model(*inputs)`` when None.
    """

    def __init__(self, model: nn.Module, forward_fn: ForwardFn | None = None) -> None:
        super().__init__()
        self.model = model
        self.forward_fn = forward_fn

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the model and flatten its outputs.

        Raises:
            TypeError: the outputs hold something other than tensors, or no tensor at all.
        """
        leaves = tree_flatten(call_model(self.model, inputs, self.forward_fn))[0]
        if not leaves or not all(isinstance(leaf, torch.Tensor) for leaf in leaves):
            kinds = sorted({type(leaf).__name__ for leaf in leaves})
            raise TypeError(f"the model must return tensors (possibly nested in lists/tuples), got {kinds}")
        return tuple(leaves)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode; restore each module's own mode on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def torch_outputs(model: nn.Module, inputs: Inputs, forward_fn: ForwardFn | None = None) -> list[torch.Tensor]:
    """Run ``model`` in eval mode without gradients, as the exported graph does.

    Args:
        model: the model.
        inputs: see :func:`as_inputs`.
        forward_fn: see :class:`TupleOutputs`.

    Returns:
        The flattened output tensors.
    """
    with eval_mode(model), torch.no_grad():
        return list(TupleOutputs(model, forward_fn)(*as_inputs(inputs)))


def export_inputs(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """Make the example batch used for exporting: the inputs, grown to at least ``EXPORT_BATCH`` samples.

    A batch of 1 is grown by repeating the sample; the values do not matter to the export.
    """
    items = as_inputs(inputs)
    batch = items[0].shape[0]
    if batch >= EXPORT_BATCH:
        return items
    repeats = -(-EXPORT_BATCH // batch)
    return tuple(torch.cat([t] * repeats)[:EXPORT_BATCH] for t in items)


def export_onnx(
    model: nn.Module,
    inputs: Inputs,
    path: str | os.PathLike[str],
    forward_fn: ForwardFn | None = None,
    opset: int | None = None,
) -> Path:
    """Export ``model`` to an ONNX file whose inputs and outputs have a dynamic batch axis.

    The model is exported in eval mode (each module's mode is restored afterwards) with weights
    stored inside the file, so it must stay under protobuf's 2 GB limit. The file is written to a temporary name next to ``path``, validated
    with ``onnx.checker.check_model`` and renamed into place, so ``path`` never holds a partial or
    invalid model.

    Args:
        model: the model to export; it is not modified.
        inputs: example inputs, a tensor or a sequence of tensors with a shared leading batch axis.
            Only their shapes and dtypes matter; a batch of 1 is repeated to 2.
        path: the ``.onnx`` file to write; its folder is created if needed.
        forward_fn: ``forward_fn(model, *inputs)`` returning the outputs to export (a tensor or
            a nested list/tuple of tensors, e.g. :func:`cpd.mm.seg_forward`); ``model(*inputs)``
            when None.
        opset: the ONNX opset; the exporter's default when None.

    Returns:
        ``path`` as a Path.

    Raises:
        ModuleNotFoundError: onnx or onnxscript is not installed (the ``export`` extra).
        TypeError, ValueError: bad inputs or outputs (see :func:`as_inputs`, :class:`TupleOutputs`).
        torch.export / onnx errors: the model cannot be exported, or the result fails the checker.
    """
    onnx = require("onnx")
    require("onnxscript")
    example = export_inputs(inputs)
    batch = torch.export.Dim("batch", min=1)
    wrapper = TupleOutputs(model, forward_fn)
    with eval_mode(wrapper), torch.no_grad(), _quiet_exporter():
        n_outputs = len(wrapper(*example))
        program = torch.onnx.export(
            wrapper,
            example,
            dynamo=True,
            external_data=False,
            opset_version=opset,
            input_names=input_names(len(example)),
            output_names=[f"output{i}" for i in range(n_outputs)],
            # One entry per forward parameter: the single ``*inputs`` holds one spec per input.
            dynamic_shapes=(tuple({0: batch} for _ in example),),
            verbose=False,
        )

    def save_checked(tmp: Path) -> None:
        onnx.save_model(program.model_proto, tmp)
        onnx.checker.check_model(str(tmp), full_check=True)

    return write_atomic(path, save_checked)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's notes that say nothing about the model being exported.

    They are: optional torchvision ops it cannot register, ops the graph optimiser does not
    constant-fold, the deprecation of a pytree class that torch itself still uses, and that the
    shared batch axis of several inputs gets one name.
    """
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used", category=UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def require(name: str) -> Any:
    """Import an optional dependency of the export code, with an install hint when it is missing."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"{name} is needed for ONNX export and checks; install the 'export' extra "
            "(pip install -e '.[export]')"
        ) from err
