"""The built-in criteria.  Every score is per unit of a group; the unit with the lowest score goes first.

``hessian``: the second-order (OBD) estimate of the loss increase when a unit is removed,
with the Hessian replaced by the empirical Fisher and kept block-diagonal over (member, unit) blocks::

    H_u = 1/2 * sum_{batches b} sum_{members m} ( sum_{i in u, m} theta_i * dL_b/dtheta_i )^2

i.e. for each batch and each parameter member, the first-order saliency of the unit's slice, squared;
summed over the group's members and over every batch of the pruning interval.  Zeroing the slice moves
the parameters by ``delta = -theta``; with the empirical Fisher ``F = E[g g^T]`` the OBD term
``1/2 delta^T F delta`` of that slice is ``1/2 E[(theta . g)^2]``.  Summing the per-member terms
(instead of squaring the sum over the whole group) drops the covariances between members, which mostly
double count one change (a BN scale and the next conv's input column express the same channel).

``group_fisher`` (Group Fisher pruning, Liu et al. 2021, the seed work's score): one mask per coupled unit,
its gradient squared.  The mask multiplies every member slice of the unit at once, so its gradient is the
saliency summed over the members, and the score squares that sum::

    G_u = 1/2 * sum_{batches b} ( sum_{members m} sum_{i in u, m} theta_i * dL_b/dtheta_i )^2

It keeps the covariances between members that ``hessian`` drops (both are the empirical-Fisher OBD term,
``hessian`` with the Fisher block-diagonal over members, ``group_fisher`` with one block per unit).

``obd`` (the default: ahead of ``taylor``, ``magnitude`` and ``random`` on every seed on the embedded
segmentation ViT, and of ``magnitude`` and ``random`` on the classifier where pruning costs accuracy; the
evidence and where it does not win are in docs/pruning.md): Optimal Brain Damage with the Hessian's
diagonal, estimated by the empirical Fisher's diagonal::

    O_u = 1/2 * sum_{batches b} sum_{members m} sum_{i in u, m} (theta_i * dL_b/dtheta_i)^2

i.e. every parameter element's own second-order term, with no cross terms at all.

``taylor``: first order, ``T_u = sum_m | mean_b sum_{i in u, m} theta_i * dL_b/dtheta_i |``.

``hessian``, ``group_fisher``, ``obd`` and ``taylor`` are loss changes: the pruner divides them by the cost the unit's removal saves
(parameters, MACs or channels: the pruning metric), so a large layer is not pruned last just for being
large and every group ranks on one global scale (Group Fisher normalises by the FLOPs or memory its removal
saves in the same way).

``magnitude`` / ``magnitude_l2``: the L1 mean / L2 root-mean-square of the unit's parameter entries over
all its members (already per element, so not divided by cost).  ``random``: uniform random scores from the
pruner's generator.
"""
from __future__ import annotations

import numpy as np
import torch

from cpd.graph.group import Group
from cpd.importance.registry import ImportanceContext, register_importance


class SaliencyCriterion:
    """Base of the criteria that read the saliency accumulator: loss changes, divided by the unit's cost."""

    needs_gradients = True
    cost_normalized = True

    def __init__(self, ctx: ImportanceContext) -> None:
        self.ctx = ctx


@register_importance("hessian")
class HessianImportance(SaliencyCriterion):
    """Second-order saliency with the empirical-Fisher diagonal blocks (see the module docstring)."""

    def __call__(self, group: Group) -> np.ndarray:
        """Returns ``H_u`` for every unit of ``group``."""
        return 0.5 * self.ctx.saliency.second_order(group.id)


@register_importance("group_fisher")
class GroupFisherImportance(SaliencyCriterion):
    """Group Fisher: the saliency summed over the coupled members, squared (see the module docstring)."""

    def __call__(self, group: Group) -> np.ndarray:
        """Returns ``G_u`` for every unit of ``group``."""
        return 0.5 * self.ctx.saliency.joint_second_order(group.id)


@register_importance("obd")
class OBDImportance(SaliencyCriterion):
    """Optimal Brain Damage with the empirical Fisher's diagonal (see the module docstring)."""

    #: the saliency accumulator must collect the per-element squares
    needs_diagonal = True

    def __call__(self, group: Group) -> np.ndarray:
        """Returns ``O_u`` for every unit of ``group``."""
        return 0.5 * self.ctx.saliency.diagonal_second_order(group.id)


@register_importance("taylor")
class TaylorImportance(SaliencyCriterion):
    """First-order Taylor saliency: the absolute mean first-order loss change, per member, summed."""

    def __call__(self, group: Group) -> np.ndarray:
        """Returns ``T_u`` for every unit of ``group``."""
        first = self.ctx.saliency.first_order(group.id)
        return np.abs(first).sum(axis=0) / max(self.ctx.saliency.batches, 1)


class MagnitudeImportance:
    """Per-element L``p`` magnitude of every parameter entry of the unit.

    Args:
        ctx: the context (only ``ctx.model`` is read).
        p: 1 for the mean absolute value, 2 for the root mean square.
    """

    needs_gradients = False
    cost_normalized = False

    def __init__(self, ctx: ImportanceContext, p: int = 1) -> None:
        self.ctx = ctx
        self.p = p

    @torch.no_grad()
    def __call__(self, group: Group) -> np.ndarray:
        """Returns ``(sum |theta|^p / count)^(1/p)`` over the unit's entries in every parameter member."""
        params = dict(self.ctx.model.named_parameters())
        total = np.zeros(group.num_units)
        count = np.zeros(group.num_units)
        for m in group.members:
            if m.kind != "param" or m.name not in params:
                continue
            w = params[m.name].detach().float().abs() ** self.p
            others = [d for d in range(w.dim()) if d != m.dim]
            per_index = (w.sum(dim=others) if others else w).double().cpu().numpy()
            total += np.bincount(m.unit, weights=per_index, minlength=group.num_units)
            count += np.bincount(m.unit, minlength=group.num_units) * (w.numel() // max(w.shape[m.dim], 1))
        return (total / np.maximum(count, 1)) ** (1.0 / self.p)


@register_importance("magnitude")
def magnitude_l1(ctx: ImportanceContext) -> MagnitudeImportance:
    """L1 magnitude (mean absolute value of the unit's entries)."""
    return MagnitudeImportance(ctx, p=1)


@register_importance("magnitude_l2")
def magnitude_l2(ctx: ImportanceContext) -> MagnitudeImportance:
    """L2 magnitude (root mean square of the unit's entries)."""
    return MagnitudeImportance(ctx, p=2)


@register_importance("random")
class RandomImportance:
    """Uniform random scores: the baseline every criterion must beat."""

    needs_gradients = False
    cost_normalized = False

    def __init__(self, ctx: ImportanceContext) -> None:
        self.ctx = ctx

    def __call__(self, group: Group) -> np.ndarray:
        """Returns one draw in [0, 1) per unit."""
        return self.ctx.rng.random(group.num_units)
