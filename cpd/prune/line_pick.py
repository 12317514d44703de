"""One fill round's pick under a latency model's MACs line.

The curves price the units (:func:`cpd.prune.schedule.select` takes the cheapest per score), and the line
says what a cut saves.  Their prices are scaled to the line by what the line says the cut so far saves over
what the curves say (:func:`line_scale`).  Units the curves price far below the counted MACs they save
(attention heads, whose ``q @ k`` and ``attn @ v`` the line counts) make that scale wrong for the pick, so a
pick the line says would go past the next threshold is selected again at the ratio the line gives the pick
itself (up to ``LINE_TRIES`` times); one still past, or one the curves price at no saving at all (their
interaction can price a wide group's first cuts beside a group already cut far below zero), is bisected to
the largest share of the need the line says lands (:func:`shrunk`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cpd.prune.schedule import EPS, select

#: selections per fill round under a MACs line (see :func:`line_pick`)
LINE_TRIES = 4

Dead = Mapping[int, np.ndarray]


@dataclass(frozen=True)
class LineView:
    """How a pick is judged under the line.

    Attributes:
        predicted: the line's latency sparsity of a cut (``{group: dead per unit}``), uncorrected.
        by_costs: the curves' latency sparsity of the same cut.
        estimate: the pruner's estimate of a cut's sparsity (its last measurement plus the corrected
            predicted difference).
        landing: how far past the threshold a pick may land.
        before_any_cut: the line's saving over the curves' on the profile's joint cuts
            (``info["line_over_curves"]``), the scale while the cut so far saves (next to) nothing.
    """

    predicted: Callable[[Dead], float]
    by_costs: Callable[[Dead], float]
    estimate: Callable[[Dead], float]
    landing: float
    before_any_cut: float = 1.0

    def lands(self, dead: Dead, threshold: float) -> bool:
        """The estimate of ``dead`` is within ``landing`` of ``threshold``."""
        return self.estimate(dead) <= threshold + self.landing


def line_scale(view: LineView, dead: Dead) -> float:
    """What the unit costs are scaled by to be savings in the line's terms: the line's predicted saving of the
    cut so far over the costs' (``view.before_any_cut`` before any cut), bounded to [0.25, 4]."""
    by_costs = view.by_costs(dead)
    ratio = view.predicted(dead) / by_costs if by_costs > 1e-3 else view.before_any_cut
    return float(np.clip(ratio, 0.25, 4.0))


def line_pick(options: Mapping[int, list], dead: Dead, now: float, need: float, threshold: float | None,
              scale: float, line: float, view: LineView) -> dict[int, list[int]]:
    """``select`` with the costs scaled by ``line``, re-selected at the pick's own line ratio and then
    bisected while the line says the pick would go past ``threshold`` (see the module docstring).

    Args:
        options: per group, its removals in order (:func:`cpd.prune.schedule.group_removals`).
        dead: the units dead before this round.
        now: the corrected sparsity before this round.
        need: the saving to reach, in the costs' terms.
        threshold: the next threshold (None: plain greedy, nothing to land on).
        scale: the costs per unit of corrected sparsity.
        line: the scale of the costs to the line (:func:`line_scale`).
        view: how a pick is judged.

    Returns:
        ``{group id: [units]}`` to remove (empty when nothing can go).
    """
    picked: dict[int, list[int]] = {}
    line_before, costs_before = view.predicted(dead), view.by_costs(dead)  # ``dead`` is the same every try
    for _ in range(LINE_TRIES):
        limit = None if threshold is None else (threshold + view.landing - now) * scale / line
        picked = select(options, need / line, limit)
        if not picked or threshold is None:
            return picked
        trial = killed(dead, picked)
        if view.lands(trial, threshold):
            return picked
        by_costs = view.by_costs(trial) - costs_before
        if by_costs <= EPS:  # the costs see no saving where the line sees one: no ratio to rescale by
            break
        ratio = float(np.clip((view.predicted(trial) - line_before) / by_costs, 0.25, 4.0))
        if ratio <= line * 1.02:  # the pick's own ratio is no worse: nothing a rescale would change
            break
        line = ratio
    return shrunk(options, dead, picked, need / line, threshold, view)


def shrunk(options: Mapping[int, list], dead: Dead, picked: dict[int, list[int]], need: float, threshold: float,
           view: LineView) -> dict[int, list[int]]:
    """The largest pick of a share of ``need`` (bisected, ``LINE_TRIES + 1`` halvings) that the line says
    lands; ``picked`` itself when it does, or when no smaller pick does (one removal that must go past:
    ``select``'s rule)."""
    if view.lands(killed(dead, picked), threshold):
        return picked
    low, high, best = 0.0, 1.0, None
    for _ in range(LINE_TRIES + 1):
        mid = 0.5 * (low + high)
        pick = select(options, need * mid)
        if pick and view.lands(killed(dead, pick), threshold):
            low, best = mid, pick
        else:
            high = mid
    return best if best else picked


def killed(dead: Dead, pick: Mapping[int, Sequence[int]]) -> dict[int, np.ndarray]:
    """A copy of ``dead`` with ``pick`` (``{group: units}``) dead too (the masks are not changed)."""
    out = {g: d.copy() for g, d in dead.items()}
    for g, units in pick.items():
        out[g][list(units)] = True
    return out
