"""Masks: the dead units of every group, shown on the model by zeros that stay zero.

Zeroing every parameter and buffer slice of a dead unit (in every member of its group) makes the unit's
channels carry exact zeros through convolutions, linear layers, batch norm, residual adds, concatenations
and attention, so the masked model computes what the physically cut model computes.  They stay zero
because a gradient hook zeroes their gradients (so gradient clipping and every other reader of ``.grad``
sees the cut model's gradients) and :meth:`MaskSet.apply_` re-zeroes the slices after each optimizer step
(momentum or weight decay could move them).  The optimizer itself is not touched.  Statistics over
channels (LayerNorm, GroupNorm with one group, RMSNorm) are the exception, handled by
:mod:`cpd.prune.live_norm`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from cpd.graph.group import Group


class MaskSet:
    """The dead units of ``groups`` and their zeroed slices on ``model``.

    Args:
        model: the model the groups were combed from.
        groups: the groups whose units may die.

    Raises:
        ValueError: a group names a tensor the model does not have.
    """

    def __init__(self, model: nn.Module, groups: Sequence[Group]) -> None:
        self.model = model
        self.groups = {g.id: g for g in groups}
        self.dead = {g.id: np.zeros(g.num_units, dtype=bool) for g in groups}
        #: bumped on every change, so cached views of the masks know when to refresh.
        self.version = 0
        self._index: dict[str, list[tuple[int, torch.Tensor]]] = {}
        self._axes: dict[tuple[str, int], tuple[int, np.ndarray]] = {}
        self._handles: list[Any] = []
        tensors = self._tensors()
        for g in groups:
            for m in g.members:
                if m.kind != "attr" and m.name not in tensors:
                    raise ValueError(f"group {g.id} names '{m.name}', which the model does not have")
                self._axes[(m.name, m.dim)] = (g.id, m.unit)

    def _tensors(self) -> dict[str, torch.Tensor]:
        out = dict(self.model.named_buffers())
        out.update(dict(self.model.named_parameters()))
        return out

    def kill_(self, removed: Mapping[int, Iterable[int]]) -> None:
        """Mark ``removed[group id]`` units dead (added to those already dead) and zero their slices.

        Raises:
            ValueError: an unknown group, a unit out of range, or a group left without a live unit.
        """
        new = {g: d.copy() for g, d in self.dead.items()}
        for gid, units in removed.items():
            if gid not in new:
                raise ValueError(f"group {gid} is not one this pruner masks; valid groups are {sorted(new)}")
            u = np.asarray(list(units), dtype=np.int64)
            if u.size and (u.min() < 0 or u.max() >= len(new[gid])):
                raise ValueError(f"unit {int(u.max())} of group {gid} is out of range 0..{len(new[gid]) - 1}")
            new[gid][u] = True
            if new[gid].all():
                raise ValueError(f"removing {u.tolist()} would leave group {gid} without a live unit")
        self.set_(new)

    def set_(self, dead: Mapping[int, np.ndarray]) -> None:
        """Replace the dead units of every group by ``dead`` (boolean per unit) and zero their slices."""
        for gid, d in dead.items():
            self.dead[int(gid)] = np.asarray(d, dtype=bool).copy()
        tensors = self._tensors()
        index: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for gid, d in self.dead.items():
            if not d.any():
                continue
            units = np.nonzero(d)[0]
            for m in self.groups[gid].members:
                if m.kind == "attr":
                    continue
                idx = m.indices(units)
                if idx.size:
                    dev = tensors[m.name].device
                    index.setdefault(m.name, []).append((m.dim, torch.as_tensor(idx, dtype=torch.long, device=dev)))
        self._index = index
        self.version += 1
        self.apply_()

    def removed(self) -> dict[int, list[int]]:
        """``{group id: [dead units]}`` for the groups that lost any."""
        return removed_of(self.dead)

    @torch.no_grad()
    def apply_(self) -> None:
        """Zero, in place, every parameter and buffer slice of a dead unit (call after each optimizer step)."""
        tensors = self._tensors()
        for name, entries in self._index.items():
            t = tensors[name]
            for dim, idx in entries:
                if idx.device != t.device:
                    idx = idx.to(t.device)
                t.index_fill_(dim, idx, 0)

    @torch.no_grad()
    def zero_grads_(self) -> None:
        """Zero the gradient slices of dead units (what the gradient hooks do, for gradients set by hand)."""
        for name, p in self.model.named_parameters():
            if p.grad is not None:
                masked = self._mask_grad(name, p.grad)
                if masked is not None:
                    p.grad.copy_(masked)

    def covers(self, name: str, dim: int) -> bool:
        """Whether axis ``dim`` of member ``name`` belongs to one of the masked groups."""
        return (name, dim) in self._axes

    def live(self, name: str, dim: int) -> torch.Tensor | None:
        """Boolean live mask along axis ``dim`` of member ``name`` (None: no group masks it, or none dead)."""
        entry = self._axes.get((name, dim))
        if entry is None:
            return None
        gid, unit = entry
        d = self.dead[gid]
        if not d.any():
            return None
        return torch.as_tensor(~d[unit])

    def _mask_grad(self, name: str, grad: torch.Tensor) -> torch.Tensor | None:
        entries = self._index.get(name)
        if not entries:
            return None
        for dim, idx in entries:
            grad = grad.index_fill(dim, idx.to(grad.device), 0)
        return grad

    def attach(self) -> None:
        """Register the gradient hooks on every parameter of the groups (idempotent)."""
        if self._handles:
            return
        params = dict(self.model.named_parameters())
        names = sorted({m.name for g in self.groups.values() for m in g.members if m.kind == "param"})
        for name in names:
            if params[name].requires_grad:
                self._handles.append(params[name].register_hook(partial(self._mask_grad, name)))

    def detach(self) -> None:
        """Remove the gradient hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []


def removed_of(dead: Mapping[int, np.ndarray]) -> dict[int, list[int]]:
    """``{group id: [dead units]}`` of a dead-unit mask set, for the groups that lost any."""
    return {int(g): np.flatnonzero(d).tolist() for g, d in dead.items() if d.any()}
