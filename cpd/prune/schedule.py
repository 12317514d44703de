"""Which units go at a pruning step: removals per group, floors, and one global ranking.

A *removal* is what one decision removes from a group: one head in a head group; elsewhere the lowest-scoring
live units whose channels bring the group's kept width down to the next multiple of the group's
``round_to`` (so widths stay multiples of it).  A group too small for that (no multiple of ``round_to``
between its floor and its width) uses the largest power-of-two fraction of ``round_to`` that fits, down to
single channels.  The *floor* of a group is ``ceil(min_keep * original width)`` channels (heads for head
groups) and never less than one unit: no layer is emptied.

Within a group, units are taken in ascending order of ``score / weight`` (``weight`` is the unit's cost in
the pruning metric for cost-normalised criteria, else 1), so each group's removals come in a fixed order; a
removal scores ``sum(score) / sum(weight)`` of its units.  Across groups, the lowest-scoring next removal of
any group is taken until the estimated saving reaches what the step needs.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cpd.graph.group import Group

#: the tolerance of the schedule's comparisons of sparsities and savings (shares of the original metric)
EPS = 1e-9

@dataclass
class Removal:
    """Units of one group removed by one decision.

    Attributes:
        gid: the group.
        units: the units.
        score: ``sum(score) / sum(weight)`` of the units (lower goes first).
        cost: the estimated saving in the pruning metric.
    """

    gid: int
    units: list[int]
    score: float
    cost: float


@dataclass
class Limits:
    """What a group must keep, fixed for the whole run.

    Attributes:
        heads: a head group (one head per removal).
        channels: channels per unit.
        round_to: the group's effective ``round_to``.
        floor: channels (heads, for head groups) that always stay.
        counts: ``counts[m, u]``: indices unit ``u`` holds in member ``m``.
        member_floor: indices every member always keeps (at least one: no layer is emptied).
    """

    heads: bool
    channels: np.ndarray
    round_to: int
    floor: int
    counts: np.ndarray
    member_floor: np.ndarray


def limits_of(group: Group, channels: np.ndarray, round_to: int, min_keep: float) -> Limits:
    """The floors and effective ``round_to`` of ``group`` (see the module docstring)."""
    heads = group.kind == "head"
    width = group.num_units if heads else int(channels.sum())
    floor = max(1, math.ceil(min_keep * width - 1e-9))
    counts = np.stack([np.bincount(m.unit, minlength=group.num_units) for m in group.members])
    sizes = counts.sum(axis=1)
    member_floor = np.maximum(1, np.ceil(min_keep * sizes - 1e-9)).astype(np.int64)
    return Limits(heads, channels, effective_round_to(width, floor, round_to), floor, counts, member_floor)


def effective_round_to(width: int, floor: int, round_to: int) -> int:
    """``round_to`` halved until some multiple of it lies in ``[floor, width)`` (at least 1)."""
    r = round_to
    while r > 1:
        k = (width - 1) // r
        if k >= 1 and k * r >= floor:
            return r
        r //= 2
    return 1


def group_removals(gid: int, dead: np.ndarray, scores: np.ndarray, weights: np.ndarray, costs: np.ndarray,
                    limits: Limits) -> list[Removal]:
    """The removals of group ``gid`` in the order they may be removed, stopping at the floors.

    A unit whose removal would take a member below its floor is skipped (kept) and the next one tried.

    Args:
        gid: the group id.
        dead: boolean per unit, True where already removed.
        scores: criterion score per unit.
        weights: divisor of the score per unit (cost in the metric, or ones).
        costs: estimated saving per unit, in the metric.
        limits: the group's floors and ``round_to``.

    Returns:
        The removals, cheapest first within the group.
    """
    live = np.nonzero(~dead)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        key = np.where(weights[live] > 0, scores[live] / np.where(weights[live] > 0, weights[live], 1), np.inf)
    order = [int(u) for u in live[np.argsort(key, kind="stable")]]
    member_live = limits.counts[:, live].sum(axis=1)
    width = len(live) if limits.heads else int(limits.channels[live].sum())
    removals: list[Removal] = []
    while order:
        target = width - 1 if limits.heads else (width - 1) // limits.round_to * limits.round_to
        if target < limits.floor:
            break
        take: list[int] = []
        pinned: set[int] = set()
        kept, removed = member_live, 0
        for u in order:
            if width - removed <= target:
                break
            after = kept - limits.counts[:, u]
            if (after < limits.member_floor).any():
                pinned.add(u)  # removing it would take a member below its floor: it stays
                continue
            take.append(u)
            kept = after
            removed += 1 if limits.heads else int(limits.channels[u])
        if not take or not limits.floor <= width - removed <= target:
            break
        w = float(weights[take].sum())
        score = float(scores[take].sum()) / w if w > 0 else math.inf
        removals.append(Removal(gid, take, score, float(costs[take].sum())))
        gone = pinned | set(take)
        order = [u for u in order if u not in gone]
        member_live, width = kept, width - removed
    return removals


def select(options: Mapping[int, list[Removal]], need: float, limit: float | None = None) -> dict[int, list[int]]:
    """Take the globally lowest-scoring next removal of any group until the estimated saving reaches ``need``.

    Removals with an infinite score (they save nothing in the metric) are never taken.

    With a ``limit`` (the saving that would reach the next threshold, plus a small tolerance): a removal that
    would take the saving past ``limit`` is passed over (and its group gives nothing more: its later
    removals assume it) in favour of the next lowest-scoring one that fits.  If the saving still falls short
    of ``need`` once nothing fits, the cheapest removals passed over are taken, and then the highest-scoring
    removals taken before are given back, last first, as long as the saving stays at ``need`` (a whole head
    that had to go makes room for the channels it overshoots by).  Removals stay whole, so widths stay
    multiples of ``round_to``, and every criterion lands on a threshold to within the tolerance or a
    fraction of one removal, instead of one removal of whichever group came last (a few points on a narrow
    model).

    Args:
        options: per group, its removals in order.
        need: the saving to reach, in the metric.
        limit: the saving not to go past when avoidable; None: plain greedy.

    Returns:
        ``{group id: [units]}`` to remove (empty when nothing can go).
    """
    heap = [(b[0].score, gid, 0) for gid, b in options.items() if b and math.isfinite(b[0].score)]
    heapq.heapify(heap)
    taken: list[tuple[int, int]] = []  # (group, index), in the order taken
    saved = 0.0
    passed: list[tuple[float, int, int]] = []  # (cost, group, index) of removals that would go past the limit
    while heap and saved < need:
        _, gid, i = heapq.heappop(heap)
        removal = options[gid][i]
        if limit is not None and saved + removal.cost > limit:
            passed.append((removal.cost, gid, i))
            continue
        taken.append((gid, i))
        saved += removal.cost
        if i + 1 < len(options[gid]) and math.isfinite(options[gid][i + 1].score):
            heapq.heappush(heap, (options[gid][i + 1].score, gid, i + 1))
    if saved < need and passed:
        forced: set[tuple[int, int]] = set()
        for cost, gid, i in sorted(passed):
            if saved >= need:
                break
            taken.append((gid, i))
            forced.add((gid, i))
            saved += cost
        for gid, i in reversed(list(taken)):
            cost = options[gid][i].cost
            last_of_group = max(j for g, j in taken if g == gid) == i
            if (gid, i) not in forced and last_of_group and saved - cost >= need:
                taken.remove((gid, i))
                saved -= cost
    out: dict[int, list[int]] = {}
    for gid, i in taken:
        out.setdefault(gid, []).extend(options[gid][i].units)
    return out
