"""Physical removal of units: slice every member tensor, shrink attribute members, fix module bookkeeping."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cpd.graph.group import DependencyGraph
from cpd.surgery.fixers import fixer_for, snapshot

#: ``{group id: [units to remove]}``: what ``cut_`` takes (a plan document holds one under ``"removed"``).
Removed = Mapping[int, Sequence[int]]
#: parameter or buffer name -> [(axis, the indices that axis keeps)]
KeptSlices = dict[str, list[tuple[int, np.ndarray]]]


def validate_plan(graph: DependencyGraph, plan: Removed) -> dict[int, np.ndarray]:
    """Check a plan against a graph and normalise it.

    Raises:
        ValueError: unknown group, group not prunable, unit out of range, or a group left with no unit.
    """
    out: dict[int, np.ndarray] = {}
    for gid, units in plan.items():
        try:
            g = graph.group(int(gid))
        except KeyError as e:
            raise ValueError(f"plan names group {gid!r}, but the graph has groups 0..{len(graph.groups) - 1}") from e
        u = np.unique(np.asarray(list(units), dtype=np.int64))
        if u.size == 0:
            continue
        if not g.prunable:
            raise ValueError(f"plan removes units of group {g.id}, which is not prunable: {g.reason}")
        if u.min() < 0 or u.max() >= g.num_units:
            raise ValueError(f"plan removes unit {int(u.max() if u.max() >= g.num_units else u.min())} of group "
                             f"{g.id}; valid units are 0..{g.num_units - 1}")
        if u.size >= g.num_units:
            raise ValueError(f"plan removes all {g.num_units} units of group {g.id}; at least one must stay")
        emptied = g.emptied_member(u)
        if emptied is not None:
            raise ValueError(f"plan removes every index of '{emptied.name}' (dim {emptied.dim}) through group {g.id}; "
                             "at least one must stay in every member")
        out[g.id] = u
    return out


def _owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str, str]]]:
    """``id(tensor) -> [(module, attribute, 'param'|'buffer')]`` for every slot holding the tensor."""
    owners: dict[int, list[tuple[nn.Module, str, str]]] = {}
    for mod in model.modules():
        for k, p in mod._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((mod, k, "param"))
        for k, b in mod._buffers.items():
            if b is not None:
                owners.setdefault(id(b), []).append((mod, k, "buffer"))
    return owners


def _tensor(model: nn.Module, name: str) -> torch.Tensor:
    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    t = getattr(mod, attr)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"'{name}' is not a tensor of this model")
    return t


def kept_slices(graph: DependencyGraph, plan: Removed) -> KeptSlices:
    """For every parameter and buffer the removal touches, the indices each of its axes keeps.

    This is how ``cut_`` slices tensors; whatever must follow a cut (an optimizer's state) slices the same way.

    Raises:
        ValueError: the plan does not fit the graph.
    """
    slices: KeptSlices = {}
    for gid, units in validate_plan(graph, plan).items():
        for m in graph.group(gid).members:
            if m.kind != "attr":
                slices.setdefault(m.name, []).append((m.dim, np.setdiff1d(np.arange(len(m.unit)), m.indices(units))))
    return slices


def _attribute_cuts(graph: DependencyGraph, removed: Mapping[int, np.ndarray]) -> dict[str, int]:
    """``"module:attr"`` -> how much the attribute shrinks."""
    attrs: dict[str, int] = {}
    for gid, units in removed.items():
        for m in graph.group(gid).members:
            if m.kind == "attr":
                attrs[m.name] = attrs.get(m.name, 0) + len(m.indices(units))
    return attrs


def cut_(model: nn.Module, graph: DependencyGraph, plan: Removed) -> None:
    """Remove, in place, the units ``plan[group_id]`` of each group, and fix every dependent attribute.

    Args:
        model: the model the graph was derived from (same fingerprint).
        graph: its dependency graph.
        plan: group id -> units to remove.

    Raises:
        ValueError: the plan does not fit the graph.
    """
    slices = kept_slices(graph, plan)
    attrs = _attribute_cuts(graph, validate_plan(graph, plan))
    owners = _owners(model)
    touched: dict[int, tuple[nn.Module, dict]] = {}
    for name, cuts in slices.items():
        old = _tensor(model, name)
        new = old.detach()
        for dim, keep in cuts:
            new = new.index_select(dim, torch.as_tensor(keep, dtype=torch.long, device=new.device))
        replacement = nn.Parameter(new.clone(), requires_grad=old.requires_grad) if isinstance(
            old, nn.Parameter) else new.clone()
        for mod, attr, kind in owners.get(id(old), []):
            touched.setdefault(id(mod), (mod, snapshot(mod)))
            if kind == "param":
                mod._parameters[attr] = replacement
            else:
                mod._buffers[attr] = replacement
    for key, count in attrs.items():
        mod_name, attr = key.rsplit(":", 1)
        mod = model.get_submodule(mod_name) if mod_name else model
        touched.setdefault(id(mod), (mod, snapshot(mod)))
        if attr.endswith("]"):
            attr, index = attr[:-1].split("[")
            seq = list(getattr(mod, attr))
            seq[int(index)] -= count
            old_value = getattr(mod, attr)
            setattr(mod, attr, type(old_value)(seq) if isinstance(old_value, (list, tuple)) else seq)
            continue
        value = getattr(mod, attr)
        if isinstance(value, (tuple, list, torch.Size)):
            setattr(mod, attr, type(value)([value[0] - count, *value[1:]]) if not isinstance(value, torch.Size)
                    else (value[0] - count, *value[1:]))
        else:
            setattr(mod, attr, value - count)
    for mod, before in touched.values():
        fix = fixer_for(mod)
        if fix is not None:
            fix(mod, before)
