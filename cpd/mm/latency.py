"""The PruningHook's side of the latency metric: its ``latency=dict(...)`` option, and the pruner's inputs.

The hook takes ``latency=dict(file=<latency model JSON>)`` (:class:`LatencyOptions`); the pipeline's
``latency`` stage writes the file.  The cut model is re-measured by a meter that
:mod:`cpd.mm.latency_meter` registers when imported (it imports onnxruntime through :mod:`cpd.export`,
which the hook, imported by every stage, must not).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from cpd.graph.group import DependencyGraph
from cpd.importance.latency import LatencyModel, read_latency_model
from cpd.mm.dist_sync import from_rank0


@dataclass(frozen=True)
class LatencyOptions:
    """How the PruningHook re-measures the cut model (``latency=dict(...)``).

    Attributes:
        file: the latency model (``cpd-latency`` JSON, the latency stage's output).
        threads: intra-op threads of the runtime (0: its default).
        warmup, runs, rounds: untimed runs, timed runs per model, alternating blocks (per measurement).
            None (threads too): as the latency model was measured (its ``info``).
        measure: re-measure at each threshold (False: the latency model's prediction only).
        exporter: how the re-measured models are exported: ``dynamo`` (the default: as the export stage
            does, so the speed decided on is the deployed graph's) or ``torchscript`` (faster to export:
            about 4 s for DeiT-S/UperNet at 512x512, where dynamo takes 13.7 s; its graph's speed-ups differ
            by a few per cent, see :mod:`cpd.export.measure`).
    """

    file: str
    threads: int | None = None
    warmup: int | None = None
    runs: int | None = None
    rounds: int | None = None
    measure: bool = True
    exporter: str = "dynamo"

    @classmethod
    def from_dict(cls, data: Any) -> "LatencyOptions":
        """Check a hook's ``latency`` argument.

        Raises:
            ValueError: not a mapping with ``file``, an unknown key, or a bad count (named).
        """
        known = [f.name for f in fields(cls)]
        if not isinstance(data, Mapping) or "file" not in data:
            raise ValueError(f"latency={data!r}: must be a dict with 'file' (the latency model JSON) and "
                             f"optionally {known[1:]}")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"latency: unknown key(s) {unknown}; valid keys are {known}")
        opts = cls(**{k: data[k] for k in data})
        if not isinstance(opts.file, (str, os.PathLike)) or not os.fspath(opts.file):
            raise ValueError(f"latency.file={opts.file!r}: must be the path of a latency model JSON")
        for key, low in (("threads", 0), ("warmup", 0), ("runs", 1), ("rounds", 1)):
            v = getattr(opts, key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
                raise ValueError(f"latency.{key}={v!r}: must be an integer >= {low} or None")
        if opts.runs is not None and opts.rounds is not None and opts.runs < opts.rounds:
            raise ValueError(f"latency.runs={opts.runs} must be at least latency.rounds={opts.rounds}")
        if not isinstance(opts.measure, bool):
            raise ValueError(f"latency.measure={opts.measure!r}: must be true or false")
        if opts.exporter not in EXPORTERS:
            raise ValueError(f"latency.exporter={opts.exporter!r}: must be one of {list(EXPORTERS)}")
        return opts


#: the meters' exporters (``cpd.export.measure.EXPORTERS``, named here so the hook never imports onnxruntime).
EXPORTERS = ("torchscript", "dynamo")

#: the meter factories registered (``cpd.mm.latency_meter`` adds one when imported); the last one is used.
METERS: list[Callable[..., Callable[[nn.Module], float]]] = []


def register_meter(factory: Callable[..., Callable[[nn.Module], float]]) -> None:
    """Register ``factory(model, forward_fn, input_shape, runtime, threads, warmup, runs, rounds, baseline=,
    exporter=)`` -> ``measure``, which the hook re-measures the cut model with."""
    if factory not in METERS:
        METERS.append(factory)


def cpu_copy(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` in eval mode (timing never touches the training model)."""
    return copy.deepcopy(model).cpu().eval()


def hook_latency(model: nn.Module, forward_fn: Callable[..., Any], graph: DependencyGraph, options: LatencyOptions
                 ) -> tuple[LatencyModel, Callable[[nn.Module], float] | None]:
    """The latency model for the hook's pruner (checked against ``graph``) and its ``measure`` (or None).

    Raises:
        FileNotFoundError, cpd.safe_load.BadFileError: the file is missing or not a latency model.
        ValueError: it was measured for another model or set of groups.
    """
    lm = read_latency_model(options.file)
    lm.check_fits(graph.fingerprint, groups=[g.id for g in graph.prunable()], where=os.fspath(options.file))
    if not options.measure:
        return lm, None
    if not METERS:
        raise ValueError("metric='latency' re-measures the cut model through cpd.mm.latency_meter: add it to "
                         "custom_imports (the prune stage does), or pass latency=dict(..., measure=False)")
    timing = {key: getattr(options, key) if getattr(options, key) is not None else int(lm.info.get(key, default))
              for key, default in (("threads", 1), ("warmup", 5), ("runs", 40), ("rounds", 4))}
    meter = METERS[-1](model, forward_fn, lm.input_shape, lm.runtime, baseline=lm.baseline,
                       exporter=options.exporter, **timing)
    return lm, from_rank0(lambda cut: meter(cpu_copy(cut)))

