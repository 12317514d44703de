"""``check``: does this model prune correctly?  Comb it, cut a share of every group, prove the invariants.

Invariants, each reported separately:
- the pruned model's outputs keep their shapes;
- they equal the unpruned model's outputs with the removed units made dead (``cpd.graph.reference``);
- forward + backward of the pruned model run and give finite gradients;
- optionally, the pruned model exports to ONNX and onnxruntime agrees with torch.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cpd.combing import comb
from cpd.flops import count_macs, count_params
from cpd.graph.forward import call_model, output_tensors, run_forward
from cpd.graph.group import DependencyGraph
from cpd.graph.reference import masked_forward
from cpd.surgery.cut import cut_


@dataclass
class CheckReport:
    """What ``check`` found; ``ok`` only if every invariant held."""

    ok: bool = True
    groups: int = 0
    prunable_groups: int = 0
    cut_groups: int = 0
    removed_units: int = 0
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    max_abs_err: float = 0.0
    rel_err: float = 0.0
    onnx: dict | None = None
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    not_prunable: dict[str, int] = field(default_factory=dict)
    #: what was seen but is the unpruned model's own behaviour, not a failure of the cut
    notes: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        """Record a failed invariant."""
        self.ok = False
        self.failures.append(msg)

    def to_dict(self) -> dict:
        """A JSON-ready dict of the report."""
        return asdict(self)


def random_plan(graph: DependencyGraph, ratio: float, seed: int = 0) -> dict[int, list[int]]:
    """Remove ``ratio`` of the units of every prunable group (at least one, never all), chosen at random.

    Raises:
        ValueError: ``ratio`` outside [0, 1).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio!r}")
    rng = np.random.default_rng(seed)
    plan = {}
    for g in graph.prunable():
        k = min(g.num_units - 1, max(1, int(ratio * g.num_units)))
        chosen: list[int] = []
        for u in rng.permutation(g.num_units).tolist():
            if len(chosen) == k:
                break
            if g.emptied_member(chosen + [u]) is None:
                chosen.append(u)
        if chosen:
            plan[g.id] = sorted(chosen)
    return plan


def _backward_ok(model: nn.Module, inputs: Sequence[Any], forward_fn: Callable[..., Any] | None) -> str:
    model.zero_grad(set_to_none=True)
    outs = [o for o in output_tensors(call_model(model, inputs, forward_fn)) if o.is_floating_point()]
    sum(o.float().square().mean() for o in outs).backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if bad:
        return f"non-finite gradients in {bad[:5]}"
    if all(p.grad is None for p in model.parameters()):
        return "no parameter received a gradient"
    return ""


def check(model: nn.Module, inputs: Sequence[Any], forward_fn: Callable[..., Any] | None = None,
          ratio: float = 0.3, seed: int = 0, atol: float = 1e-4, rtol: float = 1e-4, onnx: bool = False,
          graph: DependencyGraph | None = None) -> CheckReport:
    """Comb ``model``, cut ``ratio`` of every prunable group at random, and verify the invariants.

    Args:
        model: the model (left untouched: a copy is cut).
        inputs: example inputs (batch 2 recommended).
        forward_fn: ``forward_fn(model, *inputs)`` returning every output (default ``model(*inputs)``).
        ratio: share of units of every prunable group to remove.
        seed: chooses which units go.
        atol, rtol: tolerance of ``|pruned - masked| <= atol + rtol * max|masked|``.
        onnx: also export the pruned model to ONNX and compare onnxruntime with torch.
        graph: use this graph instead of combing (to test a given, possibly corrupted, mapping); it must
            come from combing this model in this process (it carries the trace labels).

    Returns:
        The report.
    """
    t0 = time.perf_counter()
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    rep = CheckReport()
    base = copy.deepcopy(model)
    if graph is None:
        graph = comb(base, inputs, forward_fn)
    rep.groups = len(graph.groups)
    rep.prunable_groups = len(graph.prunable())
    for g in graph.groups:
        if not g.prunable:
            key = g.reason.split(" in ")[0][:80]
            rep.not_prunable[key] = rep.not_prunable.get(key, 0) + 1
    plan = random_plan(graph, ratio, seed)
    rep.cut_groups = len(plan)
    rep.removed_units = sum(len(v) for v in plan.values())
    rep.params_before = count_params(base)
    rep.macs_before = count_macs(base, inputs, forward_fn)
    ref_outs = run_forward(base, inputs, forward_fn)
    try:
        masked = masked_forward(base, graph, plan, inputs, forward_fn)
    except Exception as e:  # noqa: BLE001 - reported as a failure of the check
        rep.fail(f"masked reference failed: {type(e).__name__}: {e}")
        masked = None
    pruned = copy.deepcopy(base)
    try:
        cut_(pruned, graph, plan)
        outs = run_forward(pruned, inputs, forward_fn)
    except Exception as e:  # noqa: BLE001
        rep.fail(f"pruned model failed to run: {type(e).__name__}: {e}")
        rep.seconds = time.perf_counter() - t0
        return rep
    rep.params_after = count_params(pruned)
    rep.macs_after = count_macs(pruned, inputs, forward_fn)
    if [o.shape for o in outs] != [o.shape for o in ref_outs]:
        rep.fail(f"output shapes changed: {[tuple(o.shape) for o in ref_outs]} -> {[tuple(o.shape) for o in outs]}")
    elif masked is not None:
        for i, (a, b) in enumerate(zip(outs, masked)):
            if not a.is_floating_point():
                continue
            err = float((a - b).abs().max()) if a.numel() else 0.0
            scale = float(b.abs().max()) if b.numel() else 0.0
            if not (math.isfinite(err) and math.isfinite(scale)):
                if bool(torch.isfinite(ref_outs[i]).all()):
                    rep.fail(f"output {i}: not finite (pruned or masked reference) where the unpruned model's is")
                else:
                    rep.notes.append(f"output {i}: not finite, as the unpruned model's (random weights)")
                continue
            rep.max_abs_err = max(rep.max_abs_err, err)
            rep.rel_err = max(rep.rel_err, err / max(scale, 1e-12))
            if err > atol + rtol * scale:
                rep.fail(f"output {i}: pruned differs from the masked reference by {err:.3g} (scale {scale:.3g})")
    try:
        why = _backward_ok(pruned, inputs, forward_fn)
        if why.startswith("non-finite"):
            # an L2 norm of an all-zero vector (SSD's L2Norm at random weights) gives the unpruned model the same
            # infinities: the cut is not to blame, so it is said, not failed
            base_why = _backward_ok(copy.deepcopy(base), inputs, forward_fn)
            if base_why.startswith("non-finite"):
                rep.notes.append(f"backward: {why}; the unpruned model's gradients are non-finite too ({base_why})")
                why = ""
        if why:
            rep.fail(f"backward: {why}")
    except Exception as e:  # noqa: BLE001
        rep.fail(f"backward failed: {type(e).__name__}: {e}")
    if onnx:
        from cpd.export.deploy import onnx_roundtrip

        rep.onnx = onnx_roundtrip(pruned, inputs, forward_fn)
        if not rep.onnx.get("ok"):
            rep.fail(f"onnx: {rep.onnx.get('error')}")
    rep.seconds = time.perf_counter() - t0
    return rep
