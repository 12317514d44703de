"""A safety net at every pruning step: the cut model must still run and give the same output shapes.

``comb`` proves every group can lose units, but it cuts all groups by the same amount at once, so two
groups whose widths the model's code silently ties (``reshape(b, c, h, w)`` with ``c`` taken from another
tensor) pass together and fail apart.  Before a pruning step is kept, the model with every dead unit cut is
run shape-only (heavy operators on the meta device); if it breaks, the groups this step touched are
bisected, the culprits' removals of this step are undone and those groups are frozen, with the reason.
Found at the step, not after the whole run when the model is materialised.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from cpd.graph.comb import run_forward
from cpd.graph.group import DependencyGraph
from cpd.surgery import cut_


def cut_breaks(model: nn.Module, graph: DependencyGraph, removed: Mapping[int, Sequence[int]],
               inputs: Sequence[Any], forward_fn: Callable[..., Any] | None,
               shapes: list[tuple[int, ...]], strip: Callable[[nn.Module], None]) -> str:
    """Why the model with ``removed`` cut does not run with the same output shapes ('' if it does).

    Args:
        model: the masked model (copied, never changed).
        graph: its dependency graph.
        removed: ``{group id: units}`` to cut.
        inputs: example inputs.
        forward_fn: how to call the model.
        shapes: the unpruned model's output shapes.
        strip: removes the pruner's hooks from the copy.
    """
    twin = copy.deepcopy(model)
    strip(twin)
    try:
        cut_(twin, graph, {g: list(u) for g, u in removed.items() if len(u)})
        got = [tuple(o.shape) for o in run_forward(twin, inputs, forward_fn, shape_only=True)]
    except Exception as e:  # noqa: BLE001 - any failure of the cut model is the verdict
        return f"cutting it breaks the forward: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
    if got != shapes:
        return f"cutting it changes the output shapes from {shapes} to {got}"
    return ""


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

    def search(gids: list[int], why: str | None = None) -> None:
        why = breaks(merged(gids)) if why is None else why
        if not why:
            return
        if len(gids) == 1:
            bad[gids[0]] = why
            return
        mid = len(gids) // 2
        search(gids[:mid])
        search(gids[mid:])
        if not any(g in bad for g in gids):
            # each half is fine alone but not together: blame the whole set's first group, then retry
            bad[gids[0]] = why
            search(gids[1:])

    search(sorted(step))
    return bad
