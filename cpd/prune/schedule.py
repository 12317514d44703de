"""Which units go at a pruning step: blocks per group, floors, and one global ranking.

A *block* is what one decision removes from a group: one head in a head group; elsewhere the lowest-scoring
live units whose channels bring the group's kept width down to the next multiple of the group's
``round_to`` (so widths stay multiples of it).  A group too small for that (no multiple of ``round_to``
between its floor and its width) uses the largest power-of-two fraction of ``round_to`` that fits, down to
single channels.  The *floor* of a group is ``ceil(min_keep * original width)`` channels (heads for head
groups) and never less than one unit: no layer is emptied.

Within a group, units are taken in ascending order of ``score / weight`` (``weight`` is the unit's cost in
the pruning metric for cost-normalised criteria, else 1), so each group's blocks come in a fixed order; a
block scores ``sum(score) / sum(weight)`` of its units.  Across groups, the lowest-scoring next block of
any group is taken until the estimated saving reaches what the step needs.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cpd.graph.group import Group


@dataclass
class Block:
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


def floor_of(group: Group, channels: np.ndarray, min_keep: float) -> int:
    """Channels (heads, for head groups) that group ``group`` always keeps: ``ceil(min_keep * width)``, >= 1."""
    width = group.num_units if group.kind == "head" else int(channels.sum())
    return max(1, math.ceil(min_keep * width - 1e-9))


def effective_round_to(width: int, floor: int, round_to: int) -> int:
    """``round_to`` halved until some multiple of it lies in ``[floor, width)`` (at least 1)."""
    r = round_to
    while r > 1:
        k = (width - 1) // r
        if k >= 1 and k * r >= floor:
            return r
        r //= 2
    return 1


def group_blocks(group: Group, dead: np.ndarray, scores: np.ndarray, weights: np.ndarray, costs: np.ndarray,
                 channels: np.ndarray, round_to: int, floor: int) -> list[Block]:
    """The blocks of ``group`` in the order they may be removed, stopping at the floor.

    Args:
        group: the group.
        dead: boolean per unit, True where already removed.
        scores: criterion score per unit.
        weights: divisor of the score per unit (cost in the metric, or ones).
        costs: estimated saving per unit, in the metric.
        channels: channels per unit.
        round_to: the group's effective ``round_to`` (ignored for head groups).
        floor: channels (heads for head groups) that must stay.

    Returns:
        The blocks, cheapest first within the group.
    """
    live = np.nonzero(~dead)[0]
    if live.size <= 1:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        key = np.where(weights[live] > 0, scores[live] / np.where(weights[live] > 0, weights[live], 1), np.inf)
    order = live[np.argsort(key, kind="stable")]
    heads = group.kind == "head"
    width = len(live) if heads else int(channels[live].sum())
    units_left = len(live)
    blocks: list[Block] = []
    i = 0
    while i < len(order):
        if heads:
            take = [int(order[i])]
            removed = 1
        else:
            target = (width - 1) // round_to * round_to
            take, removed = [], 0
            while i + len(take) < len(order) and width - removed > target:
                u = int(order[i + len(take)])
                take.append(u)
                removed += int(channels[u])
        if width - removed < floor or units_left - len(take) < 1:
            break
        w = float(weights[take].sum())
        score = float(scores[take].sum()) / w if w > 0 else math.inf
        blocks.append(Block(group.id, take, score, float(costs[take].sum())))
        i += len(take)
        width -= removed
        units_left -= len(take)
    return blocks


def select(blocks: Mapping[int, list[Block]], need: float) -> dict[int, list[int]]:
    """Take the globally lowest-scoring next block of any group until the estimated saving reaches ``need``.

    Blocks with an infinite score (they save nothing in the metric) are never taken.

    Args:
        blocks: per group, its blocks in removal order.
        need: the saving to reach, in the metric.

    Returns:
        ``{group id: [units]}`` to remove (empty when nothing can go).
    """
    heap = [(b[0].score, gid, 0) for gid, b in blocks.items() if b and math.isfinite(b[0].score)]
    heapq.heapify(heap)
    out: dict[int, list[int]] = {}
    saved = 0.0
    while heap and saved < need:
        _, gid, i = heapq.heappop(heap)
        block = blocks[gid][i]
        out.setdefault(gid, []).extend(block.units)
        saved += block.cost
        if i + 1 < len(blocks[gid]) and math.isfinite(blocks[gid][i + 1].score):
            heapq.heappush(heap, (blocks[gid][i + 1].score, gid, i + 1))
    return out
