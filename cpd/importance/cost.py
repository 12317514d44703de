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
  a unit of ``c`` channels in a group now ``w`` channels wide costs ``t_g(w) - t_g(w - c)``; the total is
  the model's additive prediction.  The pruner re-measures the cut model at each threshold.
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
            return self._latency().predict({g: self.width(g, dead) for g in self.channels})
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
            return self._latency().unit_costs(group.id, self.width(group.id, dead), self.channels[group.id])
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
