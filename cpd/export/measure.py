"""``measure(model) -> seconds`` callbacks for the latency metric: onnxruntime (CPU or CUDA) or torch eager.

The core (:func:`cpd.prune.latency.profile_latency`, :class:`cpd.prune.Pruner`) times nothing itself; it
calls one of these with cut copies of the model.  On a shared machine two timings taken minutes apart
compare two machine loads as much as two models, so every measurement is taken *against a reference*:
the unpruned model, timed in alternating blocks with the candidate (as :func:`compare_latency` does), and
reported as ``baseline * candidate / reference``, where ``baseline`` is the reference's own median when
the callback was made.  A load that slows both alike leaves the ratio, and so the measurement, unchanged.

A runtime is named ``onnxruntime-cpu``, ``onnxruntime-cuda`` or ``torch-eager``; the latency model keeps
the name and refuses to be used with another.

Two exporters (``exporter=``).  ``torchscript`` (the profile's) exports with torch's TorchScript
exporter at the deployment batch, about 20 times faster than the dynamo exporter (0.12 s against 2.8 s
for the embedded ViT at 64x64), which matters at one export per measurement; adaptive average pooling
that it refuses (output size not a factor of the input's: PSPNet's and UperNet's pyramid pooling) is
exported as two fixed averaging matrices (:mod:`cpd.export.pooling`, exact), and a model it still cannot
export goes through :func:`cpd.export.export_onnx`.  ``dynamo`` exports through
:func:`cpd.export.export_onnx`, as the export stage does: the graph that is deployed.  The two graphs
differ, and so do their speed-ups: on the embedded ViT (random weights, onnxruntime CPU, one thread, 3000
runs each in one session, ``benchmarks/exporter_graphs.py``) three cuts ran 1.52x, 2.31x and 1.60x in the
TorchScript graph and 1.48x, 2.22x and 1.56x in the dynamo one.  The ranking of the profile needs only
relative savings; a re-measurement that decides whether a speed target is reached (the pruner's) times the
deployed graph.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cpd.export.latency import compare_latency, pick_provider
from cpd.export.onnx_export import ForwardFn, TupleOutputs, eval_mode, export_onnx, torch_outputs
from cpd.export.pooling import exportable_pooling
from cpd.export.runtime import CPU, CUDA
from cpd.flops import count_param_macs, count_work

RUNTIMES = {"onnxruntime-cpu": CPU, "onnxruntime-cuda": CUDA, "torch-eager": None}
#: how a meter exports what it times: fast, or as the export stage does (the deployed graph).
EXPORTERS = ("torchscript", "dynamo")


def resolve_runtime(provider: str, log: Callable[[str], None] | None = None) -> str:
    """The runtime name for a provider setting: ``auto`` (CUDA when onnxruntime can run it), ``cpu``,
    ``cuda`` or ``torch`` (eager).  ``auto`` on a machine without CUDA says so through ``log``, once.

    Raises:
        ValueError: an unknown setting, or ``cuda`` where onnxruntime cannot run CUDA.
    """
    if provider == "torch":
        return "torch-eager"
    chosen = pick_provider(provider)
    if provider == "auto" and chosen != CUDA and log is not None:
        log("provider auto: onnxruntime cannot run CUDA on this machine; timing on the CPU")
    return "onnxruntime-cuda" if chosen == CUDA else "onnxruntime-cpu"


class LatencyMeter:
    """Times models against the unpruned ``reference`` on one runtime (see the module docstring).

    Args:
        reference: the unpruned model (eval mode is used; it is not changed).
        inputs: the deployment input (batch included).
        forward_fn: what inference runs (``task.infer_forward``); None: ``model(inputs)``.
        runtime: ``onnxruntime-cpu``, ``onnxruntime-cuda`` or ``torch-eager``.
        threads: intra-op threads (onnxruntime's setting, or torch's for eager); None or 0: the default.
        warmup: untimed runs of each model per measurement.
        runs: timed runs of each model per measurement, split into ``rounds`` alternating blocks.
        workdir: where the ONNX files go (default: a temporary folder removed with the meter).
        baseline: the reference's latency to scale by (a latency model's ``baseline``, so that its
            sparsity ``1 - measured / baseline`` is ``1 - time(model) / time(reference)``); None: the
            reference's median, timed now.
        exporter: ``torchscript`` (fast) or ``dynamo`` (the export stage's graph): see the module docstring.

    Raises:
        ValueError: an unknown runtime or exporter, or bad counts.
    """

    def __init__(self, reference: nn.Module, inputs: torch.Tensor, forward_fn: ForwardFn | None = None,
                 runtime: str = "onnxruntime-cpu", threads: int | None = 1, warmup: int = 5, runs: int = 40,
                 rounds: int = 4, workdir: str | os.PathLike[str] | None = None,
                 baseline: float | None = None, exporter: str = "torchscript") -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime={runtime!r}: must be one of {list(RUNTIMES)}")
        if exporter not in EXPORTERS:
            raise ValueError(f"exporter={exporter!r}: must be one of {list(EXPORTERS)}")
        self.export_with = exporter
        if warmup < 0 or runs < 1 or rounds < 1 or runs < rounds:
            raise ValueError(f"need warmup >= 0 and runs >= rounds >= 1; got warmup={warmup}, runs={runs}, "
                             f"rounds={rounds}")
        self.runtime, self.inputs, self.forward_fn = runtime, inputs, forward_fn
        self.threads, self.warmup, self.runs, self.rounds = threads or None, warmup, runs, rounds
        self._tmp = tempfile.TemporaryDirectory(prefix="cpd-latency-") if workdir is None else None
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)  # else the fast exporter fails and the slow one runs
        self.reference = reference.eval()
        self.count = 0
        self._last_work: tuple[Any, tuple, tuple[float, float]] | None = None  # see :meth:`work`
        if runtime != "torch-eager":
            self.reference_path = self._export(reference, "reference.onnx")
        self.baseline = float(baseline) if baseline is not None else self._pair(None)[0]

    @property
    def info(self) -> dict[str, Any]:
        """How this meter times (recorded in the latency model)."""
        return {"threads": self.threads or 0, "warmup": self.warmup, "runs": self.runs, "rounds": self.rounds,
                "against_reference": True, "exporter": getattr(self, "exporter", None), "torch": torch.__version__}

    def __call__(self, model: nn.Module) -> float:
        """The latency of ``model`` in seconds, as ``baseline * time(model) / time(reference)``."""
        ref, cand = self._pair(model.to(self.inputs.device))
        return self.baseline * cand / ref

    def macs(self, model: nn.Module) -> float:
        """MACs of ``model``'s inference forward at the deployment input (the latency model's prior)."""
        return self.work(model)[0]

    def elements(self, model: nn.Module) -> float:
        """Elements written by ``model``'s inference forward at the deployment input, products and views
        aside (the latency model's element rate)."""
        return self.work(model)[1]

    def work(self, model: nn.Module) -> tuple[float, float]:
        """``(MACs, elements)`` of ``model``'s inference forward at the deployment input, counted in one pass
        (:func:`cpd.flops.count_work`).  The last model's counts are kept, keyed by the object and its
        parameters' shapes (all the counts depend on), so that ``macs`` and ``elements`` of one cut copy, as
        the profile asks for them, run one forward."""
        key = (id(model), tuple(tuple(p.shape) for p in model.parameters()))
        last = self._last_work
        if last is not None and last[0]() is model and last[1] == key:
            return last[2]
        macs, elements = count_work(model, (self.inputs,), self.forward_fn)
        counts = (float(macs), float(elements))
        self._last_work = (weakref.ref(model), key, counts)
        return counts

    def param_macs(self, model: nn.Module) -> tuple[dict[str, int], int]:
        """MACs of ``model``'s inference forward per parameter, and in all (the latency model's overlap)."""
        return count_param_macs(model, (self.inputs,), self.forward_fn)

    def _export(self, model: nn.Module, name: str) -> Path:
        """``model``'s inference graph at the deployment input, as an ONNX file of the work folder."""
        path = self.workdir / name
        if self.export_with == "dynamo":
            self.exporter = "dynamo"
            return export_onnx(model, self.inputs, path, self.forward_fn)
        wrapper = TupleOutputs(model, self.forward_fn)
        try:
            with eval_mode(wrapper), torch.no_grad(), warnings.catch_warnings(), exportable_pooling(model):
                warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
                torch.onnx.export(wrapper, (self.inputs,), str(path), dynamo=False, opset_version=17)
            self.exporter = "torchscript"
            return path
        except Exception:  # noqa: BLE001 - any model the fast exporter cannot take goes the standard way
            self.exporter = "dynamo"
            return export_onnx(model, self.inputs, path, self.forward_fn)

    def _pair(self, model: nn.Module | None) -> tuple[float, float]:
        """Median seconds of the reference and of ``model`` (the reference alone when None), interleaved."""
        if self.runtime == "torch-eager":
            return self._pair_eager(model)
        paths = {"reference": self.reference_path}
        if model is not None:
            self.count += 1
            paths["candidate"] = self._export(model, "candidate.onnx")
        stats = compare_latency(paths, list(self.inputs.shape), self.warmup, self.runs, self.rounds,
                                "cuda" if self.runtime == "onnxruntime-cuda" else "cpu", self.threads)
        ref = stats["reference"]["median_ms"] / 1e3
        return ref, (stats["candidate"]["median_ms"] / 1e3 if model is not None else ref)

    def _pair_eager(self, model: nn.Module | None) -> tuple[float, float]:
        models = {"reference": self.reference} if model is None else {"reference": self.reference,
                                                                      "candidate": model.eval()}
        threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            times: dict[str, list[float]] = {name: [] for name in models}
            with torch.no_grad():
                for m in models.values():
                    for _ in range(self.warmup):
                        torch_outputs(m, self.inputs, self.forward_fn)
                for _ in range(self.rounds):
                    for name, m in models.items():
                        for _ in range(self.runs // self.rounds):
                            start = time.perf_counter()
                            torch_outputs(m, self.inputs, self.forward_fn)
                            times[name].append(time.perf_counter() - start)
        finally:
            torch.set_num_threads(threads)
        ref = statistics.median(times["reference"])
        return ref, statistics.median(times.get("candidate", times["reference"]))

