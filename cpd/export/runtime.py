"""Run exported ONNX files with onnxruntime: agreement with torch, and latency."""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cpd.export.onnx_export import ForwardFn, Inputs, as_inputs, require, torch_outputs
from cpd.safe_load import BadFileError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# onnxruntime's own severity scale: 3 = errors only. Probing for CUDA on a machine without it
# otherwise prints a page of warnings.
_QUIET = 3


class OnnxMismatchError(AssertionError):
    """onnxruntime's outputs differ from torch's by more than the tolerance."""


@functools.cache
def ort_providers() -> tuple[str, ...]:
    """The onnxruntime execution providers to use, best first.

    ``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` as available even on a machine without a
    GPU or CUDA libraries, so CUDA is probed by opening a one-node session with it.

    Returns:
        ``("CUDAExecutionProvider", "CPUExecutionProvider")`` when CUDA really works, else
        ``("CPUExecutionProvider",)``.

    Raises:
        ModuleNotFoundError: onnxruntime is not installed.
    """
    ort = require("onnxruntime")
    if CUDA not in ort.get_available_providers():
        return (CPU,)
    onnx = require("onnx")
    helper = onnx.helper
    value = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.log_severity_level = _QUIET
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=[CUDA, CPU])
    except Exception:  # noqa: BLE001 - any failure to open CUDA means: use the CPU
        return (CPU,)
    return (CUDA, CPU) if CUDA in session.get_providers() else (CPU,)


def open_session(path: str | os.PathLike[str], provider: str | None = None, threads: int | None = None) -> Any:
    """Open an onnxruntime session.

    Args:
        path: the ONNX file.
        provider: an execution provider name; the first of :func:`ort_providers` when None.
        threads: intra-op threads; onnxruntime's default (one per physical core) when None.

    Returns:
        An ``onnxruntime.InferenceSession``. A provider that cannot start falls back to the CPU;
        ``session.get_providers()[0]`` tells which one runs.

    Raises:
        ValueError: ``provider`` is not an available provider, or ``threads`` is negative.
        FileNotFoundError: no such file.
        cpd.safe_load.BadFileError: the file is truncated or not an ONNX model (one line naming it).
    """
    ort = require("onnxruntime")
    provider = provider or ort_providers()[0]
    if provider not in ort.get_available_providers():
        raise ValueError(f"provider {provider!r} is not available; have {ort.get_available_providers()}")
    if threads is not None and threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    options = ort.SessionOptions()
    options.log_severity_level = _QUIET
    if threads is not None:
        options.intra_op_num_threads = threads
    providers = [provider] if provider == CPU else [provider, CPU]
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file {os.fspath(path)!r} does not exist")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes for a file it cannot read
        detail = " ".join(str(e).split())
        detail = detail.rsplit(" : ", 1)[-1][:200]  # drop the "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF" prefix
        raise BadFileError(f"ONNX file {os.fspath(path)!r} cannot be loaded ({detail}); expected a complete "
                           "ONNX model, as cpd.export.export_onnx writes") from None


def run_session(session: Any, inputs: Inputs) -> list[np.ndarray]:
    """Feed tensors to a session, in the order of its graph inputs; return every output."""
    items = as_inputs(inputs)
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(items):
        raise ValueError(f"the ONNX model takes {len(names)} inputs, got {len(items)}")
    feed = {name: t.detach().cpu().numpy() for name, t in zip(names, items)}
    return session.run(None, feed)


def compare_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    inputs: Inputs,
    forward_fn: ForwardFn | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    provider: str | None = CPU,
    strict: bool = False,
) -> dict[str, Any]:
    """Run the ONNX file and the torch model on the same inputs and compare every output.

    Output ``i`` agrees when ``max|onnx - torch| <= atol + rtol * max|torch|`` (the tolerance
    scales with the output's magnitude, as in :func:`cpd.check.check`), and its shape matches.

    Args:
        path: the ONNX file, e.g. from :func:`cpd.export.export_onnx`.
        model: the torch model it was exported from (run in eval mode, not modified).
        inputs: a tensor or sequence of tensors, any batch size.
        forward_fn: the same ``forward_fn`` as for the export.
        atol, rtol: the tolerance.
        provider: execution provider; the CPU by default, since GPU kernels (TF32) may differ
            from torch's float32 CPU results by more than the tolerance. None: the best available.
        strict: raise instead of only reporting a mismatch.

    Returns:
        ``{"ok": bool, "max_abs_diff": [float per output], "max_abs": [float per output],
        "batch": int, "provider": str, "failures": [str]}``.

    Raises:
        OnnxMismatchError: ``strict`` and an output disagrees.
        ValueError: the number of inputs does not match the ONNX model.
    """
    items = as_inputs(inputs)
    session = open_session(path, provider)
    got = run_session(session, items)
    want = [t.detach().cpu().float().numpy() for t in torch_outputs(model, items, forward_fn)]
    failures: list[str] = []
    diffs: list[float] = []
    scales: list[float] = []
    if len(got) != len(want):
        failures.append(f"the ONNX model has {len(got)} outputs, torch {len(want)}")
    for i, (a, b) in enumerate(zip(got, want)):
        if a.shape != b.shape:
            failures.append(f"output {i}: shape {a.shape} in ONNX, {b.shape} in torch")
            diffs.append(float("inf"))
            scales.append(float(np.abs(b).max()) if b.size else 0.0)
            continue
        diff = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
        scale = float(np.abs(b).max()) if b.size else 0.0
        diffs.append(diff)
        scales.append(scale)
        if not diff <= atol + rtol * scale:  # also catches NaN
            failures.append(f"output {i}: max |onnx - torch| = {diff:.3g} > {atol:g} + {rtol:g} * {scale:.3g}")
    report = {
        "ok": not failures,
        "max_abs_diff": diffs,
        "max_abs": scales,
        "batch": int(items[0].shape[0]),
        "provider": session.get_providers()[0],
        "failures": failures,
    }
    if strict and failures:
        raise OnnxMismatchError(f"{Path(path).name} at batch {report['batch']}: " + "; ".join(failures))
    return report


def benchmark_latency(
    path: str | os.PathLike[str],
    input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
    warmup: int = 10,
    runs: int = 50,
    provider: str | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time single forward passes of an ONNX file with onnxruntime.

    Args:
        path: the ONNX file.
        input_shape: the shape of the input including the batch axis, e.g. ``(1, 3, 64, 64)``, or
            one shape per input. None: the model's own input shapes with the batch axis (and any
            other symbolic axis) set to 1.
        warmup: untimed runs first (session start, allocations), >= 0.
        runs: timed runs, >= 1.
        provider: execution provider; the first of :func:`ort_providers` when None.
        threads: intra-op threads; onnxruntime's default when None.
        seed: seed of the random input.

    Returns:
        ``{"median_ms", "p90_ms", "mean_ms", "min_ms", "runs", "warmup", "batch", "input_shapes",
        "provider", "onnxruntime", "threads"}``; ``provider`` is the one that really ran and
        ``threads`` the intra-op thread setting (0: onnxruntime's default).

    Raises:
        ValueError: bad ``warmup``, ``runs``, ``threads``, shapes or provider.
    """
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    ort = require("onnxruntime")
    session = open_session(path, provider, threads)
    specs = session.get_inputs()
    shapes = _input_shapes(specs, input_shape)
    rng = np.random.default_rng(seed)
    feed = {
        spec.name: rng.standard_normal(shape).astype(_numpy_dtype(spec.type))
        for spec, shape in zip(specs, shapes)
    }
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "runs": runs,
        "warmup": warmup,
        "batch": shapes[0][0] if shapes[0] else 1,
        "input_shapes": [list(s) for s in shapes],
        "provider": session.get_providers()[0],
        "onnxruntime": ort.__version__,
        "threads": threads or 0,
    }


def _input_shapes(specs: Sequence[Any], input_shape: Any) -> list[tuple[int, ...]]:
    """Resolve the shapes to feed: the given ones, or the model's with symbolic axes set to 1."""
    if input_shape is None:
        return [tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec.shape) for spec in specs]
    shapes = list(input_shape)
    if shapes and all(isinstance(d, int) for d in shapes):
        shapes = [shapes]
    shapes = [tuple(int(d) for d in s) for s in shapes]
    if len(shapes) != len(specs):
        raise ValueError(f"the ONNX model takes {len(specs)} inputs, got {len(shapes)} shapes")
    for spec, shape in zip(specs, shapes):
        fixed = [(i, d) for i, d in enumerate(spec.shape) if isinstance(d, int)]
        if len(shape) != len(spec.shape) or any(shape[i] != d for i, d in fixed) or min(shape, default=1) < 1:
            raise ValueError(f"shape {shape} does not fit input {spec.name!r} of shape {spec.shape}")
    return shapes


# Random integer inputs (token ids, indices) would mostly be out of range, so only floats are made.
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _numpy_dtype(ort_type: str) -> type:
    if ort_type not in _DTYPES:
        raise ValueError(f"cannot make a random input of type {ort_type}; only float inputs are benchmarked")
    return _DTYPES[ort_type]
