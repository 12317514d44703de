"""Export a model for deployment and prove the file: checker, dynamic batch, and agreement with torch."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cpd.export.onnx_export import EXPORT_BATCH, ForwardFn, export_onnx
from cpd.export.runtime import compare_onnx


def export_checked(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str],
                   forward_fn: ForwardFn | None = None, atol: float = 1e-4, rtol: float = 1e-4,
                   opset: int | None = None) -> dict[str, Any]:
    """Export ``model`` with a dynamic batch axis and check it against torch at batches 2 and 1.

    The export runs at a batch of 2 (a batch of 1 lets the exporter fix the batch size), the file passes
    ``onnx.checker`` (inside :func:`cpd.export.export_onnx`), and onnxruntime's outputs must agree with
    torch's within ``atol + rtol * max|torch|`` at both batch sizes.

    Args:
        model: the model (run in eval mode, not modified).
        example: one input batch of any size; its first sample is used for both batches.
        path: the ``.onnx`` file to write.
        forward_fn: ``forward_fn(model, x)``, e.g. :func:`cpd.mm.seg_forward`.
        atol, rtol: the tolerance.
        opset: the ONNX opset (None: the exporter's default).

    Returns:
        ``{"file", "bytes", "max_abs_diff", "max_abs", "batches", "atol", "rtol", "provider"}``; the
        differences are the largest over outputs and batches.

    Raises:
        cpd.export.OnnxMismatchError: onnxruntime and torch disagree beyond the tolerance.
    """
    gen = torch.Generator().manual_seed(1)
    one = example[:1]
    batch = torch.cat([one, one + 0.1 * torch.randn(one.shape, generator=gen)] * EXPORT_BATCH)[:EXPORT_BATCH]
    path = export_onnx(model, batch, path, forward_fn=forward_fn, opset=opset)
    reports = [compare_onnx(path, model, x, forward_fn=forward_fn, atol=atol, rtol=rtol, strict=True)
               for x in (batch, one)]
    return {"file": Path(path).as_posix(), "bytes": Path(path).stat().st_size,
            "max_abs_diff": max(d for r in reports for d in r["max_abs_diff"]),
            "max_abs": max(s for r in reports for s in r["max_abs"]),
            "batches": [r["batch"] for r in reports], "atol": atol, "rtol": rtol,
            "provider": reports[0]["provider"]}
