"""Latency of several ONNX files measured side by side, so that a change in machine load hits all alike.

:func:`cpd.export.benchmark_latency` times one file; comparing two files timed one after the other on a
shared machine compares two moments as much as two models.  :func:`compare_latency` opens every session
first, warms each up, then times them in ``rounds`` alternating blocks and reports each file's
statistics over all its runs.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cpd.export.onnx_export import require
from cpd.export.runtime import CPU, CUDA, _input_shapes, _numpy_dtype, open_session, ort_providers

PROVIDERS = {"auto": None, "cpu": CPU, "cuda": CUDA}


def pick_provider(name: str) -> str:
    """The execution provider for ``auto`` (CUDA when it really works, else the CPU), ``cpu`` or ``cuda``.

    Raises:
        ValueError: an unknown name, or ``cuda`` where CUDA does not work.
    """
    if name not in PROVIDERS:
        raise ValueError(f"provider={name!r}: must be one of {list(PROVIDERS)}")
    best = ort_providers()
    if name == "auto":
        return best[0]
    if PROVIDERS[name] not in best:
        raise ValueError(f"provider={name!r}: onnxruntime cannot run {PROVIDERS[name]} here (have {list(best)})")
    return PROVIDERS[name]


def compare_latency(paths: Mapping[str, str | os.PathLike[str]], input_shape: Sequence[int] | None = None,
                    warmup: int = 20, runs: int = 300, rounds: int = 6, provider: str = "auto",
                    threads: int | None = 1, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Time single forward passes of every file, interleaved.

    Args:
        paths: name -> ONNX file; every file takes the same input.
        input_shape: the input shape with the batch axis, e.g. ``(1, 3, 64, 64)``; None: the first
            model's shape with symbolic axes set to 1.
        warmup: untimed runs of each session before timing (>= 0).
        runs: timed runs per file in all (>= 1), split into ``rounds`` blocks (>= 1) taken in turn.
        provider: ``auto``, ``cpu`` or ``cuda`` (see :func:`pick_provider`).
        threads: onnxruntime intra-op threads (None or 0: its default).
        seed: seed of the random input.

    Returns:
        name -> ``{"median_ms", "p90_ms", "mean_ms", "min_ms", "runs", "warmup", "rounds", "batch",
        "input_shape", "provider", "threads", "onnxruntime"}``; ``provider`` is the one that ran.

    Raises:
        ValueError: bad counts, an empty ``paths``, or inputs that do not fit.
    """
    if not paths:
        raise ValueError("paths is empty")
    if warmup < 0 or runs < 1 or rounds < 1:
        raise ValueError(f"need warmup >= 0, runs >= 1, rounds >= 1; got {warmup}, {runs}, {rounds}")
    ort = require("onnxruntime")
    chosen = pick_provider(provider)
    sessions = {name: open_session(path, chosen, threads or None) for name, path in paths.items()}
    first = next(iter(sessions.values())).get_inputs()
    shape = _input_shapes(first, None if input_shape is None else [tuple(input_shape)])[0]
    x = np.random.default_rng(seed).standard_normal(shape).astype(_numpy_dtype(first[0].type))
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    for name, session in sessions.items():
        for _ in range(warmup):
            session.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    for count in per_round:
        for name, session in sessions.items():
            feed = feeds[name]
            for _ in range(count):
                start = time.perf_counter()
                session.run(None, feed)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: {"median_ms": statistics.median(t), "p90_ms": float(np.percentile(t, 90)),
                   "mean_ms": statistics.fmean(t), "min_ms": min(t), "runs": len(t), "warmup": warmup,
                   "rounds": rounds, "batch": int(shape[0]), "input_shape": list(shape),
                   "provider": sessions[name].get_providers()[0], "threads": threads or 0,
                   "onnxruntime": ort.__version__}
            for name, t in times.items()}
