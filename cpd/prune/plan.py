"""The plan: what was removed, per group, as a self-contained JSON document.

Schema (``format: "cpd-plan"``, ``version: 1``)::

    {
      "format": "cpd-plan", "version": 1,
      "fingerprint": "<16 hex>",         # the base model's architecture (cpd.graph.fingerprint)
      "removed": {"3": [0, 5, 6, ...]},  # group id -> removed units (positions in the group)
      "summary": {"metric": "params", "sparsity": 0.5, "criterion": "hessian", ...},
      "graph": {...}                     # the dependency graph (cpd-deps JSON), so no deps file is needed
    }

Replaying a plan on the base model (same fingerprint) cuts exactly the removed units with
:func:`cpd.surgery.cut_`, giving the pruned architecture.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from cpd.files import DocKind, write_json_atomic
from cpd.graph.deps_io import graph_from_dict, graph_to_dict
from cpd.graph.group import DependencyGraph, fingerprint
from cpd.safe_load import read_document
from cpd.surgery import cut_, prepare_
from cpd.surgery.cut import validate_plan

PLAN = DocKind("cpd-plan", 1, "plan")


def make_plan(graph: DependencyGraph, removed: Mapping[int, Sequence[int]], summary: Mapping[str, Any] | None = None
              ) -> dict:
    """The JSON-ready plan removing ``removed[group id]`` units of ``graph``'s groups.

    Raises:
        ValueError: the removal does not fit the graph.
    """
    checked = validate_plan(graph, removed)
    return {**PLAN.header(), "fingerprint": graph.fingerprint,
            "removed": {str(g): [int(u) for u in units] for g, units in sorted(checked.items())},
            "summary": dict(summary or {}), "graph": graph_to_dict(graph)}


def read_plan(plan: Mapping | str | os.PathLike) -> dict:
    """A plan from a dict, JSON text, or the path of a plan JSON file, checked for format and version.

    Raises:
        ValueError: not a cpd plan, or a version this code cannot read.
        FileNotFoundError: a path that does not exist.
    """
    if isinstance(plan, os.PathLike) or (isinstance(plan, str) and not plan.lstrip().startswith("{")):
        return read_document(plan, "plan", read_plan, "a cpd-plan file written by the prune stage")
    elif isinstance(plan, str):
        plan = json.loads(plan)
    PLAN.check(plan)
    keys = ["format", "version", "fingerprint", "removed", "graph"]
    for key in keys:
        if key not in plan:
            raise ValueError(f"plan lacks {key!r}; a plan has the keys {keys}")
    return dict(plan)


def plan_removed(plan: Mapping) -> dict[int, list[int]]:
    """``{group id: [units]}`` of a plan."""
    return {int(g): [int(u) for u in units] for g, units in plan["removed"].items()}


def save_plan(plan: Mapping, path: str | os.PathLike) -> None:
    """Write the plan JSON atomically."""
    write_json_atomic(dict(plan), path)


def check_plan(model: nn.Module, plan: Mapping) -> DependencyGraph:
    """Check that ``plan`` fits ``model`` (unpruned) and return the plan's graph; nothing is changed.

    Raises:
        ValueError: another architecture (fingerprint), or removed units the graph does not allow.
    """
    fp = fingerprint(model)
    if fp != plan["fingerprint"]:
        raise ValueError(f"the plan was made for a model with fingerprint {plan['fingerprint']}, this model has "
                         f"{fp}: pass the unpruned base model built from the same config")
    graph = graph_from_dict(plan["graph"])
    if graph.fingerprint != plan["fingerprint"]:
        raise ValueError(f"the plan's graph has fingerprint {graph.fingerprint}, the plan says "
                         f"{plan['fingerprint']}: the plan is corrupted")
    validate_plan(graph, plan_removed(plan))
    return graph


def apply_plan_(model: nn.Module, plan: Mapping | str | os.PathLike) -> nn.Module:
    """Cut, in place, the units a plan removed from the unpruned ``model``; returns ``model``.

    Raises:
        ValueError: the plan does not fit the model (checked before anything is changed).
    """
    plan = read_plan(plan)
    graph = check_plan(model, plan)
    prepare_(model)
    cut_(model, graph, plan_removed(plan))
    return model
