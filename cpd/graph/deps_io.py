"""The dependency JSON: a versioned, documented file that names groups by ``named_parameters()`` names.

Schema (``format: "cpd-deps"``, ``version: 1``)::

    {
      "format": "cpd-deps", "version": 1,
      "fingerprint": "<16 hex>",            # names and shapes of the model's parameters and buffers
      "input_shapes": [[2, 3, 512, 512]],   # the example inputs of the trace
      "groups": [
        {"id": 0, "kind": "channel" | "head", "prunable": true, "reason": "", "normalized": false,
         "num_units": 384,
         "members": [
           {"name": "backbone.layers.0.ln1.weight", "dim": 0, "kind": "param", "unit": [0, 1, ...]},
           {"name": "backbone.layers.0.attn:num_heads", "dim": 0, "kind": "attr", "unit": [0, 1, 2]}
         ]}
      ],
      "notes": {"unknown_ops": {...}, "unreached": [...]}
    }

``unit[i]`` is the unit that index ``i`` of the member's axis belongs to: removing unit ``u`` of a group
removes, from every member, the indices whose ``unit`` is ``u`` (the spirit of the original ``out_group``
and ``out_in_group``).  Loading against a model with another fingerprint is refused.
"""
from __future__ import annotations

import json
import os

import numpy as np
from torch import nn

from cpd.files import DocKind, write_json_atomic
from cpd.graph.group import DependencyGraph, Group, Member, fingerprint
from cpd.safe_load import read_document

DEPS = DocKind("cpd-deps", 1, "dependency file")


def graph_to_dict(graph: DependencyGraph) -> dict:
    """The JSON-ready form of a dependency graph."""
    return {
        **DEPS.header(),
        "fingerprint": graph.fingerprint,
        "input_shapes": graph.input_shapes,
        "groups": [
            {"id": g.id, "kind": g.kind, "prunable": g.prunable, "reason": g.reason, "normalized": g.normalized,
             "num_units": g.num_units,
             "members": [{"name": m.name, "dim": m.dim, "kind": m.kind, "unit": m.unit.tolist()} for m in g.members]}
            for g in graph.groups
        ],
        "notes": graph.notes,
    }


def graph_from_dict(data: dict) -> DependencyGraph:
    """Rebuild a dependency graph from its JSON form.

    Raises:
        ValueError: not a cpd dependency file, or a version this code cannot read.
    """
    DEPS.check(data)
    groups = [
        Group(id=g["id"], num_units=g["num_units"], prunable=g["prunable"], reason=g["reason"], kind=g["kind"],
              normalized=g.get("normalized", False),
              members=[Member(m["name"], m["dim"], m["kind"], np.asarray(m["unit"], dtype=np.int64))
                       for m in g["members"]])
        for g in data["groups"]
    ]
    return DependencyGraph(groups=groups, fingerprint=data["fingerprint"], input_shapes=data.get("input_shapes", []),
                           notes=data.get("notes", {}))


def save_deps(graph: DependencyGraph, path: str | os.PathLike) -> None:
    """Write the dependency JSON of ``graph`` to ``path`` atomically."""
    write_json_atomic(graph_to_dict(graph), path)


def load_deps(path: str | os.PathLike, model: nn.Module | None = None) -> DependencyGraph:
    """Read a dependency JSON; with ``model``, refuse it unless the fingerprints match.

    Raises:
        FileNotFoundError: no such file.
        ValueError: truncated or not a dependency file, unsupported version, or made for another architecture.
    """
    graph = read_document(path, "deps JSON", graph_from_dict, "a cpd-deps file written by `cpd comb`")
    if model is not None:
        fp = fingerprint(model)
        if fp != graph.fingerprint:
            raise ValueError(f"{path} was made for another architecture (fingerprint {graph.fingerprint}, this model "
                             f"has {fp}); regenerate it with `cpd comb` for this model")
    return graph
