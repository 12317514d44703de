"""The registry of importance criteria: a name -> a factory of ``group -> scores per unit`` callables.

A criterion is built once per pruning run from an :class:`ImportanceContext` (the model, the saliency
accumulator, a random generator) and then called on groups.  Criteria register by name with
:func:`register_importance`; ``PruneConfig.criterion`` picks one.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import nn

from cpd.graph.group import Group
from cpd.importance.saliency import SaliencyAccumulator


@dataclass
class ImportanceContext:
    """What a criterion may read.

    Attributes:
        model: the model being pruned (its current, masked weights).
        saliency: the per-unit sums of ``theta * grad`` collected since the last pruning step.
        rng: the pruner's random generator (its state is saved with the pruner).
    """

    model: nn.Module
    saliency: SaliencyAccumulator
    rng: np.random.Generator


class Importance(Protocol):
    """A criterion: ``criterion(group)`` returns one score per unit of the group; lower goes first.

    Attributes:
        needs_gradients: the criterion reads the saliency accumulator (fed after every backward).
        needs_diagonal: (optional, on the factory: read before the criterion is built) the accumulator must
            also collect the per-element squares (``SaliencyAccumulator.diagonal_second_order``).
        cost_normalized: scores are a loss change, to be divided by what removing the unit saves
            (parameters, MACs or channels, the pruning metric) so that groups of every size rank on one
            scale.  Criteria that are already per element (magnitude) or scale-free (random) leave it False.
    """

    needs_gradients: bool
    cost_normalized: bool

    def __call__(self, group: Group) -> np.ndarray:
        ...


ImportanceFactory = Callable[[ImportanceContext], Importance]

#: criterion name -> factory.
IMPORTANCES: dict[str, ImportanceFactory] = {}


def register_importance(name: str) -> Callable[[ImportanceFactory], ImportanceFactory]:
    """Register a criterion factory under ``name`` (used as a decorator).

    Args:
        name: the name ``PruneConfig.criterion`` selects it by.

    Returns:
        The decorator, which returns the factory unchanged.

    Raises:
        ValueError: ``name`` is empty or already registered.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"an importance name must be a non-empty string, got {name!r}")
    if name in IMPORTANCES:
        raise ValueError(f"importance {name!r} is already registered")

    def deco(factory: ImportanceFactory) -> ImportanceFactory:
        IMPORTANCES[name] = factory
        return factory

    return deco


def build_importance(name: str, ctx: ImportanceContext) -> Importance:
    """Build the criterion registered as ``name``.

    Raises:
        ValueError: no criterion has that name.
    """
    if name not in IMPORTANCES:
        raise ValueError(f"unknown importance criterion {name!r}; registered: {sorted(IMPORTANCES)}")
    return IMPORTANCES[name](ctx)
