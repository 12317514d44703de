"""Adaptive average pooling as two fixed averaging matrices, for the TorchScript exporter.

The TorchScript ONNX exporter refuses ``adaptive_avg_pool2d`` whose output size does not divide the input
size: the pyramid pooling of PSPNet and UperNet (bins of 3 and 6 over a 32x32 or 64x64 map) is the common
case.  Without it, every latency measurement of such a model goes through the dynamo exporter, about 50
times slower (see :mod:`cpd.export.measure`).

Adaptive pooling of an ``H``-long axis to ``o`` bins averages, for bin ``i``, the rows
``floor(i * H / o)`` to ``ceil((i + 1) * H / o)``: a fixed ``o x H`` matrix ``P``.  Over two axes the
pooled map is ``P_h @ x @ P_w^T``, exact up to float rounding.  :func:`exportable_pooling` swaps that in
for the modules that need it, only while the block runs, and only where the output size does not divide
the input size (elsewhere the module runs as it is, and exports as ``AveragePool``).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def averaging_matrix(size: int, bins: int, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``bins x size`` matrix whose row ``i`` averages what adaptive pooling puts in bin ``i``.

    Raises:
        ValueError: ``size`` or ``bins`` below 1.
    """
    if size < 1 or bins < 1:
        raise ValueError(f"need size >= 1 and bins >= 1; got size={size}, bins={bins}")
    matrix = torch.zeros(bins, size, dtype=dtype, device=device)
    for i in range(bins):
        start, end = (i * size) // bins, math.ceil((i + 1) * size / bins)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def matrix_adaptive_avg_pool2d(x: torch.Tensor, output_size: int | tuple[int | None, int | None]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)`` as ``P_h @ x @ P_w^T`` (``x``: ``(..., H, W)``)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    oh, ow = h if oh is None else int(oh), w if ow is None else int(ow)
    rows = averaging_matrix(h, oh, x.dtype, x.device)
    cols = averaging_matrix(w, ow, x.dtype, x.device)
    return torch.matmul(torch.matmul(rows, x), cols.t())


def _divides(x: torch.Tensor, output_size: int | tuple[int | None, int | None]) -> bool:
    sizes = (output_size, output_size) if isinstance(output_size, int) else output_size
    return all(o is None or int(n) % int(o) == 0 for n, o in zip(x.shape[-2:], sizes))


@contextmanager
def exportable_pooling(model: nn.Module) -> Iterator[int]:
    """While the block runs, ``model``'s ``nn.AdaptiveAvgPool2d`` modules pool through
    :func:`matrix_adaptive_avg_pool2d` where their output size does not divide the input; yields how
    many modules were patched.  Functional calls of ``F.adaptive_avg_pool2d`` are not reached."""
    patched = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]

    def forward_of(module: nn.AdaptiveAvgPool2d):
        def forward(x: torch.Tensor) -> torch.Tensor:
            if _divides(x, module.output_size):
                return F.adaptive_avg_pool2d(x, module.output_size)
            return matrix_adaptive_avg_pool2d(x, module.output_size)
        return forward

    for module in patched:
        module.forward = forward_of(module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward  # the instance attribute: the class's forward is back
