"""One call that proves a model exports to ONNX and runs the same in onnxruntime at two batch sizes."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cpd.export.onnx_export import ForwardFn, Inputs, as_inputs, export_onnx
from cpd.export.runtime import compare_onnx

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


def onnx_roundtrip(
    model: nn.Module,
    inputs: Inputs,
    forward_fn: ForwardFn | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    opset: int | None = None,
) -> dict[str, Any]:
    """Export ``model`` to a temporary ONNX file, check it, and compare onnxruntime with torch.

    The comparison runs at the batch size of ``inputs`` (``ok``) and at one sample more
    (``dynamic_batch``), which fails unless the batch axis of the exported graph is really dynamic
    (some models bake the batch size into their reshapes). Never raises for a model that fails:
    the failure is reported.

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
            path = export_onnx(model, items, Path(tmp) / "model.onnx", forward_fn, opset)
            first = compare_onnx(path, model, items, forward_fn, atol, rtol)
            worst = max(first["max_abs_diff"], default=0.0)
            if first["failures"]:
                error = "onnxruntime disagrees with torch: " + "; ".join(first["failures"])
            else:
                # a model whose own code bakes the batch size into reshapes exports, but only for that batch
                try:
                    second = compare_onnx(path, model, other_batch(items), forward_fn, atol, rtol)
                    worst = max(worst, max(second["max_abs_diff"], default=0.0))
                    dynamic_error = "; ".join(second["failures"]) or None
                except Exception as err:  # noqa: BLE001
                    dynamic_error = describe(err)
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
