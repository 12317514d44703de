"""Prove an ONNX file: export, ``onnx.checker``, and onnxruntime against torch at two batch sizes.

One mechanism, two ways to use it:

- :func:`export_checked` writes the file a deployment uses and raises unless onnxruntime agrees with torch
  at a batch of 2 and a batch of 1 (the export stage);
- :func:`onnx_roundtrip` exports to a temporary file and reports instead of raising: agreement at the
  example batch (``ok``) and at one sample more (``dynamic_batch``, false for models whose own code bakes
  the batch size into reshapes) (``cpd check``).

Both run :func:`prove_onnx`: export once, then compare at each batch.
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cpd.export.onnx_export import EXPORT_BATCH, ForwardFn, Inputs, as_inputs, export_onnx
from cpd.export.runtime import OnnxMismatchError, compare_onnx

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def prove_onnx(model: nn.Module, inputs: Inputs, path: str | os.PathLike[str], batches: Sequence[Inputs],
               forward_fn: ForwardFn | None = None, atol: float = 1e-4, rtol: float = 1e-4,
               opset: int | None = None) -> tuple[Path, list[dict[str, Any] | BaseException]]:
    """Export ``model`` at ``inputs`` to ``path`` and compare onnxruntime with torch at every batch.

    Args:
        model: the model (run in eval mode, not modified).
        inputs: the example inputs of the export.
        path: the ``.onnx`` file to write (atomically, after ``onnx.checker``).
        batches: the inputs to compare at, in order.
        forward_fn: ``forward_fn(model, *inputs)``, e.g. :func:`cpd.mm.seg_forward`.
        atol, rtol: the tolerance (see :func:`cpd.export.compare_onnx`).
        opset: the ONNX opset (None: the exporter's default).

    Returns:
        The file, and per batch either :func:`cpd.export.compare_onnx`'s report or the error that ran it
        aground (a graph that cannot take that batch).

    Raises:
        Whatever the export raises: the model cannot be exported.
    """
    path = export_onnx(model, inputs, path, forward_fn=forward_fn, opset=opset)
    reports: list[dict[str, Any] | BaseException] = []
    for x in batches:
        try:
            reports.append(compare_onnx(path, model, x, forward_fn=forward_fn, atol=atol, rtol=rtol))
        except Exception as err:  # noqa: BLE001 - reported per batch
            reports.append(err)
    return path, reports


def export_checked(model: nn.Module, example: torch.Tensor, path: str | os.PathLike[str],
                   forward_fn: ForwardFn | None = None, atol: float = 1e-4, rtol: float = 1e-4,
                   opset: int | None = None) -> dict[str, Any]:
    """Export ``model`` with a dynamic batch axis and check it against torch at batches 2 and 1.

    The export runs at a batch of 2 (a batch of 1 lets the exporter fix the batch size), made of the
    example's first sample and a noisy copy of it.

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
        cpd.export.OnnxMismatchError: onnxruntime and torch disagree beyond the tolerance, or the file
            does not run at one of the batches.
    """
    gen = torch.Generator().manual_seed(1)
    one = example[:1]
    batch = torch.cat([one, one + 0.1 * torch.randn(one.shape, generator=gen)] * EXPORT_BATCH)[:EXPORT_BATCH]
    path, reports = prove_onnx(model, batch, path, (batch, one), forward_fn, atol, rtol, opset)
    for r, x in zip(reports, (batch, one)):
        if isinstance(r, BaseException):
            raise OnnxMismatchError(f"{Path(path).name} does not run at batch {x.shape[0]}: {describe(r)}") from r
        if r["failures"]:
            raise OnnxMismatchError(f"{Path(path).name} at batch {r['batch']}: " + "; ".join(r["failures"]))
    return {"file": Path(path).as_posix(), "bytes": Path(path).stat().st_size,
            "max_abs_diff": max(d for r in reports for d in r["max_abs_diff"]),
            "max_abs": max(s for r in reports for s in r["max_abs"]),
            "batches": [r["batch"] for r in reports], "atol": atol, "rtol": rtol,
            "provider": reports[0]["provider"]}


def other_batch(inputs: Inputs, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Make inputs with one sample more than ``inputs``: its samples reversed, then a new one.

    The new sample is the first one plus seeded noise (floating inputs only), so no two samples
    of the batch are equal and a graph that mixes samples across the batch shows it.
    """
    items = as_inputs(inputs)
    generator = torch.Generator().manual_seed(seed)
    grown = []
    for t in items:
        extra = t[:1].clone()
        if extra.is_floating_point():
            extra += 0.1 * torch.randn(extra.shape, generator=generator, dtype=extra.dtype)
        grown.append(torch.cat([t.flip(0), extra]))
    return tuple(grown)


def onnx_roundtrip(model: nn.Module, inputs: Inputs, forward_fn: ForwardFn | None = None, atol: float = 1e-4,
                   rtol: float = 1e-4, opset: int | None = None) -> dict[str, Any]:
    """Export ``model`` to a temporary ONNX file, check it, and compare onnxruntime with torch.

    The comparison runs at the batch size of ``inputs`` (``ok``) and at one sample more
    (``dynamic_batch``). Never raises for a model that fails: the failure is reported.

    Args:
        model: the model (not modified; run in eval mode).
        inputs: example inputs, a tensor or a sequence of tensors with a leading batch axis.
        forward_fn: ``forward_fn(model, *inputs)``, e.g. :func:`cpd.mm.seg_forward`.
        atol, rtol: tolerance per output, see :func:`cpd.export.compare_onnx`.
        opset: ONNX opset for the export.

    Returns:
        ``{"ok": bool, "max_abs_diff": float (over all outputs and both batches; inf when no
        comparison ran), "error": str | None, "seconds": float, "dynamic_batch": bool,
        "dynamic_error": str | None}``.
    """
    start = time.perf_counter()
    worst = float("inf")
    error: str | None = None
    dynamic_error: str | None = "not reached"
    try:
        items = as_inputs(inputs)
        with tempfile.TemporaryDirectory(prefix="cpd-onnx-") as tmp:
            _, (first, second) = prove_onnx(model, items, Path(tmp) / "model.onnx", (items, other_batch(items)),
                                            forward_fn, atol, rtol, opset)
        if isinstance(first, BaseException):
            raise first
        worst = max(first["max_abs_diff"], default=0.0)
        if first["failures"]:
            error = "onnxruntime disagrees with torch: " + "; ".join(first["failures"])
        elif isinstance(second, BaseException):
            dynamic_error = describe(second)
        else:
            worst = max(worst, max(second["max_abs_diff"], default=0.0))
            dynamic_error = "; ".join(second["failures"]) or None
    except Exception as err:  # noqa: BLE001 - the roundtrip reports failures instead of raising
        error = describe(err)
    return {"ok": error is None, "max_abs_diff": worst, "error": error, "seconds": time.perf_counter() - start,
            "dynamic_batch": error is None and dynamic_error is None, "dynamic_error": dynamic_error}


def describe(err: BaseException) -> str:
    """One line naming an error and, when the exporter wrapped it, the error underneath."""
    parts = []
    while err is not None and len(parts) < 3:
        text = _ANSI.sub("", str(err)).strip()
        first_line = (text.splitlines() or [""])[0][:300]
        parts.append(f"{type(err).__name__}: {first_line}")
        err = err.__cause__
    return " <- ".join(parts)
