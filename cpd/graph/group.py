"""Groups of coupled channels, built from the facts a trace recorded.

Two connected-component passes do all the work: labels tied by an equality or by a coarse label form a
*unit* (removed together); units that share a member axis form a *group* (they compete for that axis).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from cpd.graph.labels import AxisRef, LabelSpace

HEAD_ATTRS = ("num_heads", "heads", "n_heads", "num_attention_heads", "head_num")


@dataclass
class Member:
    """One axis of a parameter, buffer or integer attribute inside a group.

    Attributes:
        name: parameter/buffer name, or ``"module.path:attr"`` for an attribute.
        dim: the axis (0 for attributes).
        kind: ``"param"``, ``"buffer"`` or ``"attr"``.
        unit: for every index along ``dim``, the unit (position in the group) it belongs to.
    """

    name: str
    dim: int
    kind: str
    unit: np.ndarray

    def indices(self, units: np.ndarray | list[int]) -> np.ndarray:
        """Indices of this axis that belong to ``units``."""
        return np.nonzero(np.isin(self.unit, np.asarray(units, dtype=np.int64)))[0]


@dataclass
class Group:
    """Coupled units: removing unit ``u`` removes ``m.indices([u])`` from every member ``m``."""

    id: int
    members: list[Member]
    num_units: int
    prunable: bool = True
    reason: str = ""
    kind: str = "channel"
    normalized: bool = False

    def unit_sizes(self) -> np.ndarray:
        """Channels per unit along the first parameter member (heads count their channels)."""
        ref = next((m for m in self.members if m.kind != "attr"), self.members[0])
        return np.bincount(ref.unit, minlength=self.num_units)

    def emptied_member(self, units: np.ndarray | list[int]) -> Member | None:
        """The first member that would lose every index if ``units`` were removed, else None."""
        gone = np.asarray(units, dtype=np.int64)
        for m in self.members:
            if len(m.unit) and np.isin(m.unit, gone).all():
                return m
        return None

    def param_members(self) -> list[Member]:
        """Members that are tensors (parameters and buffers)."""
        return [m for m in self.members if m.kind != "attr"]


@dataclass
class DependencyGraph:
    """Every group of a model, with the fingerprint of the architecture it was derived from."""

    groups: list[Group]
    fingerprint: str
    input_shapes: list[list[int]] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    #: label -> (group id, unit) of the trace that built this graph (not saved; see ``cpd.graph.reference``).
    label_units: np.ndarray | None = field(default=None, repr=False)

    def prunable(self) -> list[Group]:
        """Groups that can lose units (prunable and with more than one unit)."""
        return [g for g in self.groups if g.prunable and g.num_units > 1]

    def group(self, gid: int) -> Group:
        """The group with id ``gid``.

        Raises:
            KeyError: no such group.
        """
        for g in self.groups:
            if g.id == gid:
                return g
        raise KeyError(f"no group {gid}; valid ids are 0..{len(self.groups) - 1}")


def fingerprint(model: nn.Module) -> str:
    """A hash of the names and shapes of every parameter and floating buffer, in order."""
    h = hashlib.sha256()
    for name, t in list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]:
        h.update(f"{name}:{tuple(t.shape)};".encode())
    return h.hexdigest()[:16]


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component id (the smallest node id) of each of ``n`` nodes joined by edges ``a[i] - b[i]``."""
    comp = np.arange(n, dtype=np.int64)
    if len(a) == 0:
        return comp
    while True:
        ca, cb = comp[a], comp[b]
        m = np.minimum(ca, cb)
        new = comp.copy()
        for idx in (a, b, ca, cb):
            np.minimum.at(new, idx, m)
        new = new[new]
        if np.array_equal(new, comp):
            return comp
        comp = new


def _edges(space: LabelSpace) -> tuple[np.ndarray, np.ndarray]:
    a, b = space.equalities()
    ca = [np.full(len(m), c, dtype=np.int64) for c, m in space.coarse.items()]
    cb = list(space.coarse.values())
    if ca:
        a = np.concatenate([a] + ca)
        b = np.concatenate([b] + [np.asarray(m, dtype=np.int64) for m in cb])
    return a.astype(np.int64), b.astype(np.int64)


def _is_hyperplane_partition(units: np.ndarray) -> bool:
    """Whether every unit in a grid is a set of whole slices along one axis (so the grid stays rectangular)."""
    for u in np.unique(units):
        mask = units == u
        ok = False
        for ax in range(units.ndim):
            others = tuple(d for d in range(units.ndim) if d != ax)
            if np.array_equal(mask, np.broadcast_to(mask.any(axis=others, keepdims=True), mask.shape)):
                ok = True
                break
        if not ok:
            return False
    return True


def build_groups(space: LabelSpace, unreached: list[AxisRef], fp: str) -> DependencyGraph:
    """Turn the recorded facts into groups.

    Args:
        space: the label space after tracing.
        unreached: member axes the trace never used (made not prunable).
        fp: the model fingerprint.

    Returns:
        The dependency graph, groups ordered by their first member.
    """
    n = space.next_label
    a, b = _edges(space)
    unit_of = connected_components(n, a, b)
    axes = list(space.axes.items())
    la, lb = [], []
    for _ref, (start, size) in axes:
        u = unit_of[start:start + size]
        la.append(u[:-1])
        lb.append(u[1:])
    group_of = connected_components(n, np.concatenate(la) if la else np.zeros(0, np.int64),
                                    np.concatenate(lb) if lb else np.zeros(0, np.int64))
    blocked: dict[int, str] = {}
    for label, reason in space.blocked.items():
        blocked.setdefault(int(group_of[unit_of[label]]), reason)
    unreached_set = set(unreached)
    for ref in unreached:
        start, _ = space.axes[ref]
        blocked.setdefault(int(group_of[unit_of[start]]), f"'{ref.name}' is not reached by the traced forward")
    for grid in space.grids:
        units = unit_of[grid]
        if (grid != 0).all() and not _is_hyperplane_partition(units):
            g = int(group_of[units.reshape(-1)[0]])
            blocked.setdefault(g, f"a reshape lays these channels out as a {list(grid.shape)} grid that the "
                                  "units would not keep rectangular")
    norm_groups = {int(group_of[unit_of[label]]) for label in space.normalized}
    by_group: dict[int, list[tuple[AxisRef, np.ndarray]]] = {}
    for ref, (start, size) in axes:
        by_group.setdefault(int(group_of[unit_of[start]]), []).append((ref, unit_of[start:start + size]))
    groups = []
    for gid, items in by_group.items():
        if len(items) == 1 and gid in blocked:
            continue  # a lone blocked axis (a kernel axis, image channels) couples nothing: not worth listing
        uniq = np.unique(np.concatenate([u for _, u in items]))
        members = [Member(ref.name, ref.dim, ref.kind, np.searchsorted(uniq, u)) for ref, u in items]
        is_head = any(m.kind == "attr" and m.name.rsplit(":", 1)[-1] in HEAD_ATTRS for m in members)
        reason = blocked.get(gid, "")
        groups.append(Group(id=len(groups), members=members, num_units=len(uniq), prunable=not reason,
                            reason=reason, kind="head" if is_head else "channel", normalized=gid in norm_groups))
    del unreached_set
    graph = DependencyGraph(groups=groups, fingerprint=fp)
    # label -> (group id, unit) for the labels of listed groups; used to replay a trace with dead units
    label_units = np.full((n, 2), -1, dtype=np.int64)
    gid_to_pos = {gid: i for i, gid in enumerate(g for g, items in by_group.items()
                                                  if not (len(items) == 1 and g in blocked))}
    for gid, items in by_group.items():
        if gid not in gid_to_pos:
            continue
        uniq = np.unique(np.concatenate([u for _, u in items]))
        mask = np.isin(unit_of, uniq) & (group_of[unit_of] == gid)
        label_units[mask, 0] = gid_to_pos[gid]
        label_units[mask, 1] = np.searchsorted(uniq, unit_of[mask])
    graph.label_units = label_units
    return graph
