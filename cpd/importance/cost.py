"""What removing a unit saves, in the pruning metric: parameters, MACs or channels.

Every member axis belongs to one group, and surgery slices each parameter along its member axes, so a
parameter's live size is the product over its axes of the live indices of each axis.  From this:

- ``params``: exact.  The model's parameter count is ``sum_p prod_d live(p, d)``; removing unit ``u``
  saves, per parameter member ``m`` of its group, ``count_m(u) * prod_{d != m.dim} live(p, d)``.
- ``flops`` (MACs at the example input size): every convolution / matrix product is attributed to the
  parameter it multiplies (:func:`cpd.flops.count_param_macs`), giving MACs per parameter element; a
  unit costs its parameter saving weighted by those rates.  This is exact for convolutions and linear
  layers (their MACs are ``live weight elements x output positions``); products of two activations
  (attention scores, ``attn @ v``) multiply no parameter, so they are held constant in the estimate
  although they shrink when heads go.  The pruner measures the true MACs of the cut model after each step.
- ``channels``: the number of channels of the unit (the fewest indices any parameter member gives it,
  so a head counts its head dimension and a ``flatten -> Linear`` channel counts once).
- ``latency`` (seconds on a runtime, predicted by a measured :class:`cpd.importance.latency.LatencyModel`):
  a unit of ``c`` channels in a group now ``w`` channels wide costs ``k * m_u * (t_g(w) - t_g(w - c))``;
  the total is the model's prediction, its summed single-group savings scaled by ``k`` and by the MACs
  overlap :meth:`CostModel.overlap` (``m_u``: :meth:`CostModel.unit_overlap`).  The pruner re-measures the
  cut model at each threshold.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch import nn

from cpd.graph.group import Group, Member
from cpd.importance.latency import LatencyModel

METRICS = ("params", "flops", "channels", "latency")
Dead = Mapping[int, np.ndarray]


def channels_per_unit(group: Group) -> np.ndarray:
    """Channels of every unit: the fewest indices any parameter member puts in it (at least 1)."""
    counts = [np.bincount(m.unit, minlength=group.num_units) for m in group.members if m.kind == "param"]
    if not counts:
        counts = [np.bincount(m.unit, minlength=group.num_units) for m in group.members]
    c = np.stack(counts).astype(np.float64)
    c[c == 0] = np.inf
    out = c.min(axis=0)
    out[~np.isfinite(out)] = 1
    return out.astype(np.int64)


class CostModel:
    """Per-unit costs and model totals of a set of groups, given which of their units are dead.

    Args:
        model: the model (only parameter names and shapes are read).
        groups: the groups whose units may be dead.
        param_macs: MACs attributed to each parameter (``count_param_macs``); needed for ``flops``.
        total_macs: MACs of the whole model, including products that multiply no parameter.
        latency: the measured latency model; needed for ``latency``.

    Raises:
        ValueError: a group names a parameter the model does not have.
    """

    def __init__(self, model: nn.Module, groups: Sequence[Group], param_macs: Mapping[str, int] | None = None,
                 total_macs: int = 0, latency: LatencyModel | None = None) -> None:
        self.latency = latency
        self.shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        self.groups = {g.id: g for g in groups}
        self._axes: dict[str, list[tuple[int, Member]]] = {}
        for g in groups:
            for m in g.members:
                if m.kind != "param":
                    continue
                if m.name not in self.shapes:
                    raise ValueError(f"group {g.id} names parameter '{m.name}', which the model does not have")
                self._axes.setdefault(m.name, []).append((g.id, m))
        self.channels = {g.id: channels_per_unit(g) for g in groups}
        macs = dict(param_macs or {})
        self.rate = {n: macs.get(n, 0) / max(int(np.prod(s)), 1) for n, s in self.shapes.items()}
        self.other_macs = max(int(total_macs) - sum(macs.values()), 0)

    def live_shape(self, name: str, dead: Dead) -> list[int]:
        """The shape parameter ``name`` has once the dead units are cut."""
        shape = list(self.shapes[name])
        for gid, m in self._axes.get(name, []):
            d = dead.get(gid)
            if d is not None and d.any():
                shape[m.dim] = int((~d[m.unit]).sum())
        return shape

    def width(self, gid: int, dead: Dead) -> int:
        """The live channels of group ``gid``."""
        c = self.channels[gid]
        return int(c[~dead[gid]].sum()) if gid in dead else int(c.sum())

    def _latency(self) -> LatencyModel:
        if self.latency is None:
            raise ValueError("metric='latency' needs a latency model (cpd.prune.profile_latency); none was given")
        return self.latency

    def total(self, dead: Dead, metric: str) -> float:
        """The model's size in ``metric`` with the dead units cut (``flops`` as estimated, see module doc)."""
        if metric == "channels":
            return float(sum(int(c[~dead[g]].sum()) if g in dead else int(c.sum()) for g, c in self.channels.items()))
        if metric == "latency":
            return self._latency().predict({g: self.width(g, dead) for g in self.channels}, self.overlap(dead))
        total = 0.0
        for name in self.shapes:
            n = float(np.prod(self.live_shape(name, dead)))
            total += n * self.rate[name] if metric == "flops" else n
        return total + (self.other_macs if metric == "flops" else 0.0)

    def unit_costs(self, group: Group, dead: Dead, metric: str) -> np.ndarray:
        """What removing each unit of ``group`` alone would save now, in ``metric``."""
        if metric == "channels":
            return self.channels[group.id].astype(np.float64)
        if metric == "latency":
            return self._latency().unit_costs(group.id, self.width(group.id, dead), self.channels[group.id],
                                              self.unit_overlap(group, dead))
        cost = np.zeros(group.num_units)
        for m in group.members:
            if m.kind != "param":
                continue
            shape = self.live_shape(m.name, dead)
            per_index = float(np.prod([s for d, s in enumerate(shape) if d != m.dim]))
            if metric == "flops":
                per_index *= self.rate[m.name]
            cost += np.bincount(m.unit, minlength=group.num_units) * per_index
        return cost

    def _macs_saved(self, dead: Dead, names: Sequence[str]) -> float:
        """Estimated MACs the dead units save in the parameters ``names`` (products of two activations held
        constant, as in ``total``)."""
        return sum(self.rate[n] * (float(np.prod(self.shapes[n])) - float(np.prod(self.live_shape(n, dead))))
                   for n in names)

    def overlap(self, dead: Dead) -> float:
        """``o``: the MACs cutting every dead unit at once saves, over the sum of what each group's cut saves
        alone (1 when nothing is cut or no MACs were counted; below 1 where two cut groups meet in a layer)."""
        cut = {g: d for g, d in dead.items() if d.any()}
        alone = sum(self._macs_saved({g: d}, self._names_of(g)) for g, d in cut.items())
        if alone <= 0:
            return 1.0
        names = sorted({n for g in cut for n in self._names_of(g)})  # a parameter two cut groups slice: once
        return self._macs_saved(cut, names) / alone

    def unit_overlap(self, group: Group, dead: Dead) -> np.ndarray:
        """``m_u`` per unit of ``group``: the MACs removing it saves now over what it saves with only its own
        group cut (1 for a unit that multiplies nothing)."""
        now = self.unit_costs(group, dead, "flops")
        own = {group.id: dead[group.id]} if group.id in dead else {}
        alone = self.unit_costs(group, own, "flops")
        return np.divide(now, alone, out=np.ones_like(now), where=alone > 0)

    def _names_of(self, gid: int) -> list[str]:
        """The parameters group ``gid`` slices, each once (a parameter can hold several of its members)."""
        return sorted({m.name for m in self.groups[gid].members if m.kind == "param"})
