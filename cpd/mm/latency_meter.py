"""Timing for the latency metric of an mmengine model: the meter the PruningHook re-measures with, and the
latency model the pipeline's latency stage measures.

Both time what inference runs (the task's ``infer_forward``: no auxiliary heads) at the deployment input,
on CPU copies of the model, through :class:`cpd.export.measure.LatencyMeter`.  Importing this module
registers :func:`make_meter` with :mod:`cpd.mm.latency` (``custom_imports=['cpd.mm.latency_meter']``, as
the prune stage adds), so that the hook, and every stage that imports it, need not import onnxruntime.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from cpd.graph.group import DependencyGraph
from cpd.importance.latency import LatencyModel
from cpd.mm.latency import cpu_copy, register_meter


def make_meter(model: nn.Module, forward_fn: Callable[..., Any], input_shape: Sequence[int], runtime: str,
               threads: int = 1, warmup: int = 5, runs: int = 40, rounds: int = 4,
               baseline: float | None = None, exporter: str = "torchscript") -> Any:
    """A :class:`cpd.export.measure.LatencyMeter` timing CPU copies of ``model`` through ``forward_fn``
    (the task's ``infer_forward``) on a random input of ``input_shape``, exported with ``exporter``."""
    from cpd.export.measure import LatencyMeter

    x = torch.randn(*[int(d) for d in input_shape])
    return LatencyMeter(cpu_copy(model), x, forward_fn, runtime, threads, warmup, runs, rounds, baseline=baseline,
                        exporter=exporter)


register_meter(make_meter)


def profile_model(model: nn.Module, forward_fn: Callable[..., Any], graph: DependencyGraph,
                  input_shape: Sequence[int], provider: str = "auto", threads: int = 1, warmup: int = 5,
                  runs: int = 40, rounds: int = 4, round_to: int = 8, min_keep: float = 0.1, align: bool = True,
                  log: Callable[[str], None] | None = None) -> LatencyModel:
    """Measure ``model``'s latency model on a runtime (:func:`cpd.prune.latency.profile_latency`).

    Args:
        model: the unpruned model (random weights do: only the structure is timed).
        forward_fn: what inference runs (the task's ``infer_forward``).
        graph: its dependency graph.
        input_shape: the deployment input shape, batch included.
        provider: ``auto`` (onnxruntime CUDA when it runs, else the CPU: said through ``log``), ``cpu``,
            ``cuda`` or ``torch`` (eager).
        threads, warmup, runs, rounds: how each measurement times (see :class:`LatencyMeter`).
        round_to, min_keep: the pruning run's, so the measured widths are widths it can reach.
        align: also measure what ``round_to`` is worth (reported in ``info["round_to"]``).
        log: gets one line per group measured, and the provider note.

    Raises:
        ValueError: ``provider='cuda'`` where onnxruntime cannot run CUDA, or bad counts.
    """
    from cpd.export.measure import resolve_runtime
    from cpd.prune.latency import profile_latency

    graph_model = cpu_copy(model)
    runtime = resolve_runtime(provider, log)
    meter = make_meter(graph_model, forward_fn, input_shape, runtime, threads, warmup, runs, rounds)
    lm = profile_latency(graph_model, graph, meter, runtime, input_shape, round_to=round_to, min_keep=min_keep,
                         align=align, macs=meter.macs, param_macs=meter.param_macs,
                         elements=meter.elements, info=meter.info, log=log)
    return replace(lm, info={**lm.info, "measurements": meter.count})
