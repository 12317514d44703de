"""``comb``: trace a model, build its groups, and prove every prunable group can really be cut."""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cpd.graph.group import DependencyGraph, build_groups, fingerprint
from cpd.graph.labels import AxisRef
from cpd.graph import shape_only
from cpd.graph.tracer import trace
from cpd.surgery.adapters import prepare_
from cpd.surgery.cut import cut_

ForwardFn = Callable[..., Any]


class ShapeOnly(TorchDispatchMode):
    """Run heavy operators on the meta device and return zeros: enough to check that shapes still fit."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return shape_only.call(func, args, kwargs or {}, True)


def run_forward(model: nn.Module, inputs: Sequence[Any], forward_fn: ForwardFn | None,
                shape_only: bool = False) -> list[torch.Tensor]:
    """Call the model in eval mode without gradients and return its output tensors, flattened."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # same random draws as the traced and masked runs
            if shape_only:
                with ShapeOnly():
                    out = forward_fn(model, *inputs) if forward_fn else model(*inputs)
            else:
                out = forward_fn(model, *inputs) if forward_fn else model(*inputs)
    finally:
        model.train(was)
    return [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]


def _first_units(group, k: int) -> list[int]:
    """Up to ``k`` units of ``group`` whose removal empties no member (the first ones that fit)."""
    chosen: list[int] = []
    for u in range(group.num_units - 1):
        if len(chosen) == k:
            break
        if group.emptied_member(chosen + [u]) is None:
            chosen.append(u)
    return chosen


def _probe(model: nn.Module, graph: DependencyGraph, amounts: dict[int, int], inputs: Sequence[Any],
           forward_fn: ForwardFn | None, shapes: list[tuple[int, ...]]) -> str:
    """Cut ``amounts[g]`` units of each group ``g`` on a copy; '' if it still runs with the same output shapes."""
    twin = copy.deepcopy(model)
    try:
        plan = {g: _first_units(graph.group(g), k) for g, k in amounts.items()}
        cut_(twin, graph, {g: u for g, u in plan.items() if u})
        outs = run_forward(twin, inputs, forward_fn, shape_only=True)
    except Exception as e:  # noqa: BLE001 - any failure of the cut model is the verdict we report
        return f"cutting it breaks the forward: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
    got = [tuple(o.shape) for o in outs]
    if got != shapes:
        return f"cutting it changes the output shapes from {shapes} to {got}"
    return ""


def verify_cuts_(model: nn.Module, graph: DependencyGraph, inputs: Sequence[Any],
                 forward_fn: ForwardFn | None) -> None:
    """Mark not prunable every group whose cut breaks the model, found by bisection.

    Two probes: every group loses one unit, then groups lose one or two units alternately, so that a width
    the model's code ties between two groups (``x.reshape(B, y.shape[1], H, W)``) shows up as a break.
    """
    shapes = [tuple(o.shape) for o in run_forward(model, inputs, forward_fn, shape_only=True)]
    bad: dict[int, str] = {}

    def search(amounts: dict[int, int], gids: list[int]) -> None:
        if not gids:
            return
        why = _probe(model, graph, {g: amounts[g] for g in gids}, inputs, forward_fn, shapes)
        if not why:
            return
        if len(gids) == 1:
            bad[gids[0]] = why
            return
        mid = len(gids) // 2
        search(amounts, gids[:mid])
        search(amounts, gids[mid:])
        if not any(g in bad for g in gids):
            for g in gids:  # only the combination breaks: refuse them all rather than guess
                bad[g] = why

    for spread in (False, True):
        groups = [g for g in graph.prunable() if g.id not in bad]
        amounts = {g.id: 1 + (i % 2 if spread and g.num_units > 2 else 0) for i, g in enumerate(groups)}
        search(amounts, list(amounts))
    for g in graph.groups:
        if g.id in bad:
            g.prunable, g.reason = False, bad[g.id]


def comb(model: nn.Module, example_inputs: Sequence[Any], forward_fn: ForwardFn | None = None,
         exclude: Sequence[str] = (), verify: bool = True) -> DependencyGraph:
    """Derive the channel-dependency groups of ``model``.

    The model is prepared in place first (modules such as ``nn.MultiheadAttention`` are re-classed to
    functionally identical prunable versions; parameter names do not change).

    Args:
        model: any ``nn.Module``.
        example_inputs: inputs for one forward call (a batch of 2 is best: it shows batch/channel mix-ups).
        forward_fn: ``forward_fn(model, *example_inputs)`` returning every output used in training
            (e.g. all heads of a segmentor); default ``model(*example_inputs)``.
        exclude: parameter or module names (prefixes) whose channels must never be pruned.
        verify: cut one unit of every prunable group on a copy and mark groups that break it not prunable.

    Returns:
        The dependency graph.
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    prepare_(model)
    space, tracer, members = trace(model, tuple(example_inputs), forward_fn)
    names = {name: tid for tid, (name, _) in members.items()}
    for ref in list(space.axes):
        if ref.kind != "attr" and any(ref.name == e or ref.name.startswith(e.rstrip(".") + ".") for e in exclude):
            start, size = space.axes[ref]
            space.block(torch.arange(start, start + size), f"excluded by the user ('{ref.name}')")
    unreached = [ref for ref in space.axes
                 if ref.kind != "attr" and names.get(ref.name) not in tracer.reached]
    graph = build_groups(space, unreached, fingerprint(model))
    graph.input_shapes = [list(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)]
    graph.notes = {"unknown_ops": dict(tracer.unknown_ops),
                   "unreached": sorted({r.name for r in unreached})}
    if verify:
        verify_cuts_(model, graph, tuple(example_inputs), forward_fn)
    return graph


__all__ = ["AxisRef", "comb", "run_forward", "verify_cuts_"]
