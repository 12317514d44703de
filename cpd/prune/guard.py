"""Cut twins: cheap copies of the masked model with the dead units cut, to check and to measure a step.

A twin is built on the meta device when the model allows it (parameters become shape-only tensors, so a
copy of a large model costs nothing and the forward does no arithmetic); a model whose forward needs real
values (``.item()``, data-dependent control flow) gets a real deep copy run with heavy operators skipped.

The safety net: ``comb`` proves every group can lose units, but it cuts all groups by the same amount at
once, so two groups whose widths the model's code silently ties (``reshape(b, c, h, w)`` with ``c`` taken
from another tensor) pass together and fail apart.  Before a pruning step is kept, the twin with every dead
unit cut must run and give the unpruned output shapes; if it does not, the groups this step touched are
bisected (:func:`culprits`), the culprits' removals of this step are undone and those groups are frozen,
with the reason.  Found at the step, not after the whole run when the model is materialised.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from cpd.flops import count_macs
from cpd.graph.comb import run_forward
from cpd.graph.group import DependencyGraph
from cpd.surgery import cut_


def _to_meta(inputs: Sequence[Any]) -> tuple:
    return tuple(tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, list(inputs)))


class CutTwin:
    """Builds and runs cut copies of ``model``.

    Args:
        model: the masked model (never changed).
        graph: its dependency graph.
        inputs: example inputs.
        forward_fn: how to call the model.
        strip: removes the pruner's forward hooks from a copy.
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph, inputs: Sequence[Any],
                 forward_fn: Callable[..., Any] | None, strip: Callable[[nn.Module], None]) -> None:
        self.model, self.graph, self.inputs, self.forward_fn, self.strip = model, graph, inputs, forward_fn, strip
        self.shapes = [tuple(o.shape) for o in run_forward(model, inputs, forward_fn, shape_only=True)]
        try:
            got = [tuple(o.shape) for o in run_forward(self.copy(meta=True), _to_meta(inputs), forward_fn)]
            self.meta = got == self.shapes
        except Exception:  # noqa: BLE001 - any failure means: this model needs real tensors
            self.meta = False

    def copy(self, meta: bool | None = None) -> nn.Module:
        """A copy of the model without the pruner's hooks (on the meta device if ``meta``)."""
        memo: dict[int, Any] = {}
        if self.meta if meta is None else meta:
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                m = t.detach().to("meta")
                memo[id(t)] = nn.Parameter(m, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else m
        twin = copy.deepcopy(self.model, memo)
        self.strip(twin)
        return twin

    def cut(self, removed: Mapping[int, Sequence[int]]) -> nn.Module:
        """A copy with ``removed`` cut (on the meta device when the model allows it)."""
        twin = self.copy()
        cut_(twin, self.graph, {g: list(u) for g, u in removed.items() if len(u)})
        return twin

    def breaks(self, removed: Mapping[int, Sequence[int]]) -> str:
        """Why the model with ``removed`` cut does not run with the same output shapes ('' if it does)."""
        try:
            twin = self.cut(removed)
            if self.meta:
                outs = run_forward(twin, _to_meta(self.inputs), self.forward_fn)
            else:
                outs = run_forward(twin, self.inputs, self.forward_fn, shape_only=True)
        except Exception as e:  # noqa: BLE001 - any failure of the cut model is the verdict
            return f"cutting it breaks the forward: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
        got = [tuple(o.shape) for o in outs]
        if got != self.shapes:
            return f"cutting it changes the output shapes from {self.shapes} to {got}"
        return ""

    def macs(self, removed: Mapping[int, Sequence[int]], inputs: Sequence[Any]) -> int:
        """MACs of the model with ``removed`` cut, on ``inputs``."""
        twin = self.cut(removed)
        return count_macs(twin, _to_meta(inputs) if self.meta else inputs, self.forward_fn)


def culprits(before: Mapping[int, Sequence[int]], step: Mapping[int, Sequence[int]],
             breaks: Callable[[dict[int, list[int]]], str]) -> dict[int, str]:
    """The groups whose removals of this step break the model, found by bisection.

    Args:
        before: ``{group id: units}`` dead before this step (known to be fine).
        step: ``{group id: units}`` this step removes.
        breaks: ``breaks(removed)`` -> reason ('' if the cut model runs).

    Returns:
        ``{group id: reason}`` for each culprit (empty when the whole step is fine).
    """

    def merged(gids: list[int]) -> dict[int, list[int]]:
        out = {g: list(u) for g, u in before.items()}
        for g in gids:
            out[g] = sorted(set(out.get(g, [])) | set(step[g]))
        return out

    bad: dict[int, str] = {}

    def search(gids: list[int]) -> None:
        why = breaks(merged(gids))
        if not why:
            return
        if len(gids) == 1:
            bad[gids[0]] = why
            return
        mid = len(gids) // 2
        search(gids[:mid])
        search(gids[mid:])
        if not any(g in bad for g in gids):
            # each half is fine alone but not together: blame the first group, then retry without it
            bad[gids[0]] = why
            search(gids[1:])

    search(sorted(step))
    return bad
