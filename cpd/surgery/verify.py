"""Verification by cutting: cut a copy, run it for shapes, and find by bisection the groups that break it.

A dependency graph says which channels are coupled as far as the trace saw; the model's code may still tie
widths the trace cannot see (``x.reshape(B, y.shape[1], H, W)`` with the width taken from another tensor).
The only proof that a group can lose units is to cut a copy and run it.  Two users, one mechanism:

- ``comb`` (:func:`verify_cuts_`) cuts every prunable group at once, first by one unit each, then by one
  or two units alternately (so a tie between two groups shows up as unequal widths), and refuses the
  groups whose cut breaks the model;
- the pruner's guard cuts the dead units of the masked model after each pruning step, and freezes the
  groups whose removals of that step break it (found at the step, not when the model is materialised).

Both find the culprits with :func:`breaking_groups`, one bisection with one policy: a set of groups that
breaks the model is split in halves; a single group that breaks it alone is a culprit; when every part
is fine alone and only the combination breaks, every group of the combination is refused (the code ties
them, and which one to blame is a guess).

A :class:`CutTwin` is built on the meta device when the model allows it (parameters become shape-only
tensors, so a copy of a large model costs nothing and the forward does no arithmetic); a model whose
forward needs real values (``.item()``, data-dependent control flow) gets a real copy run with heavy
operators skipped.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from cpd.graph.forward import ForwardFn, run_forward
from cpd.graph.group import DependencyGraph
from cpd.surgery.cut import cut_


def to_meta(inputs: Sequence[Any]) -> tuple:
    """The inputs with every tensor moved to the meta device."""
    return tuple(tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, list(inputs)))


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


class CutTwin:
    """Builds and runs cut copies of ``model``; the model itself is never changed.

    Args:
        model: the (masked) model.
        graph: its dependency graph.
        inputs: example inputs.
        forward_fn: how to call the model.
        strip: removes hooks the copy must not carry (the pruner's); None: nothing to remove.
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, inputs: Sequence[Any],
                 forward_fn: ForwardFn | None, strip: Callable[[nn.Module], None] | None = None) -> None:
        self.model, self.graph, self.inputs, self.forward_fn = model, graph, tuple(inputs), forward_fn
        self.strip = strip
        #: whether heavy operators may skip their arithmetic: not when the forward reads values they compute
        #: (ViG indexes its k nearest neighbours by distances a matrix product gives)
        self.shape_only = True
        try:
            outs = run_forward(model, self.inputs, forward_fn, shape_only=True)
        except Exception:  # noqa: BLE001 - the full run decides
            self.shape_only = False
            outs = run_forward(model, self.inputs, forward_fn)
        self.shapes = [tuple(o.shape) for o in outs]
        try:
            got = [tuple(o.shape) for o in run_forward(self.copy(meta=True), to_meta(self.inputs), forward_fn)]
            self.meta = got == self.shapes
        except Exception:  # noqa: BLE001 - any failure means: this model needs real tensors
            self.meta = False

    def copy(self, meta: bool | None = None) -> nn.Module:
        """A copy of the model without the stripped hooks (on the meta device if ``meta``; default: if it can)."""
        memo: dict[int, Any] = {}
        if self.meta if meta is None else meta:
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                m = t.detach().to("meta")
                memo[id(t)] = nn.Parameter(m, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else m
        twin = copy.deepcopy(self.model, memo)
        if self.strip is not None:
            self.strip(twin)
        return twin

    def cut(self, removed: Mapping[int, Sequence[int]]) -> nn.Module:
        """A copy with ``removed`` (``{group id: units}``) cut, on the meta device when the model allows it."""
        twin = self.copy()
        cut_(twin, self.graph, {g: list(u) for g, u in removed.items() if len(u)})
        return twin

    def run_inputs(self, inputs: Sequence[Any]) -> tuple:
        """``inputs`` as a copy made by :meth:`cut` takes them (on the meta device, or unchanged)."""
        return to_meta(inputs) if self.meta else tuple(inputs)

    def breaks(self, removed: Mapping[int, Sequence[int]]) -> str:
        """Why the model with ``removed`` cut does not run with the same output shapes ('' if it does)."""
        try:
            twin = self.cut(removed)
            outs = run_forward(twin, self.run_inputs(self.inputs), self.forward_fn,
                               shape_only=self.shape_only and not self.meta)
        except Exception as e:  # noqa: BLE001 - any failure of the cut model is the verdict
            return f"cutting it breaks the forward: {_first_line(e)}"
        got = [tuple(o.shape) for o in outs]
        if got != self.shapes:
            return f"cutting it changes the output shapes from {self.shapes} to {got}"
        return ""


def breaking_groups(gids: Sequence[int], breaks: Callable[[list[int]], str]) -> dict[int, str]:
    """The groups among ``gids`` whose cut breaks the model, by bisection (see the module docstring).

    Args:
        gids: the groups to try together.
        breaks: ``breaks(subset)`` -> why cutting the groups of ``subset`` breaks the model ('' if it does not).

    Returns:
        ``{group id: reason}`` of the culprits (empty when cutting all of ``gids`` is fine).
    """
    bad: dict[int, str] = {}

    def search(part: list[int]) -> None:
        if not part:
            return
        why = breaks(part)
        if not why:
            return
        if len(part) == 1:
            bad[part[0]] = why
            return
        mid = len(part) // 2
        search(part[:mid])
        search(part[mid:])
        if not any(g in bad for g in part):
            for g in part:  # only the combination breaks: refuse them all rather than guess
                bad[g] = why

    search(list(gids))
    return bad


def first_units(group: Any, k: int) -> list[int]:
    """Up to ``k`` units of ``group`` whose removal empties no member (the first ones that fit).

    Every unit is a candidate, the last one too: when a member lives on the first units only (an attribute
    tied to the first head's channels), the probe must still cut the group through another unit, or the
    group would stay prunable untried. At least one unit always stays.
    """
    chosen: list[int] = []
    for u in range(group.num_units):
        if len(chosen) == min(k, group.num_units - 1):
            break
        if group.emptied_member(chosen + [u]) is None:
            chosen.append(u)
    return chosen


def verify_cuts_(model: nn.Module, graph: DependencyGraph, inputs: Sequence[Any],
                 forward_fn: ForwardFn | None = None) -> None:
    """Mark not prunable every group whose cut breaks the model (``comb``'s proof, see the module docstring).

    Two probes: every group loses one unit, then groups lose one or two units alternately.
    """
    twin = CutTwin(model, graph, inputs, forward_fn)
    bad: dict[int, str] = {}
    for spread in (False, True):
        groups = [g for g in graph.prunable() if g.id not in bad]
        plan = {g.id: first_units(g, 1 + (i % 2 if spread and g.num_units > 2 else 0)) for i, g in enumerate(groups)}
        bad.update(breaking_groups(list(plan), lambda part: twin.breaks({g: plan[g] for g in part})))
    for g in graph.groups:
        if g.id in bad:
            g.prunable, g.reason = False, bad[g.id]
