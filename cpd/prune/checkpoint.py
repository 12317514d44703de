"""Pruned models on disk: structure as data (the plan) plus plain tensors, never pickled modules.

A checkpoint written by :func:`save_pruned` is a ``torch.save`` dict::

    {"format": "cpd-pruned", "version": 1,
     "plan": "<the plan JSON as a string>",
     "state_dict": {name: tensor, ...}}      # the pruned model's state dict, CPU tensors

:func:`load_pruned` rebuilds the pruned model from the unpruned base module (built from its config), the
plan and the weights, reading files with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping

import torch
from torch import nn

from cpd.files import DocKind
from cpd.graph.group import DependencyGraph
from cpd.prune.plan import apply_plan_, check_plan, plan_removed, read_plan
from cpd.safe_load import NOT_FROM_CPD, load_torch, save_torch

PRUNED = DocKind("cpd-pruned", 1, "pruned checkpoint")


def save_pruned(model: nn.Module, plan: Mapping | str | os.PathLike, path: str | os.PathLike) -> None:
    """Write the pruned ``model``'s weights and its ``plan`` to ``path`` atomically (temporary file + rename).

    Args:
        model: the pruned model (physically cut).
        plan: its plan (dict, JSON text or path).
        path: the checkpoint file.

    Raises:
        ValueError: ``plan`` is not a cpd plan.
    """
    plan = read_plan(plan)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    ckpt = {**PRUNED.header(), "plan": json.dumps(plan, separators=(",", ":")), "state_dict": state}
    save_torch(ckpt, path)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """The plan and the state dict of a :func:`save_pruned` checkpoint (loaded with ``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, refused (:mod:`cpd.safe_load`), or not a cpd pruned checkpoint of a
            supported version.
    """
    ckpt = PRUNED.check(load_torch(path, "pruned checkpoint", opt_in=NOT_FROM_CPD), os.fspath(path))
    return read_plan(ckpt["plan"]), ckpt["state_dict"]


def pruned_shapes(model: nn.Module, graph: DependencyGraph, removed: Mapping[int, list[int]]) -> dict[str, tuple]:
    """The state-dict shapes the unpruned ``model`` will have once ``removed`` is cut (it is not changed)."""
    state = model.state_dict(keep_vars=True)
    aliases: dict[int, list[str]] = {}
    for key, t in state.items():
        if isinstance(t, torch.Tensor):
            aliases.setdefault(id(t), []).append(key)
    tensors = dict(model.named_buffers())
    tensors.update(dict(model.named_parameters()))
    shapes = {k: list(t.shape) for k, t in state.items() if isinstance(t, torch.Tensor)}
    for gid, units in removed.items():
        for m in graph.group(gid).members:
            if m.kind == "attr" or m.name not in tensors:
                continue
            gone = len(m.indices(units))
            for key in aliases.get(id(tensors[m.name]), [m.name]):
                shapes[key][m.dim] -= gone
    return {k: tuple(v) for k, v in shapes.items()}


def _load_weights(weights: Mapping[str, torch.Tensor] | str | os.PathLike) -> Mapping[str, torch.Tensor]:
    if isinstance(weights, Mapping):
        return weights
    loaded = load_torch(weights, "weights")
    if isinstance(loaded, dict) and loaded.get("format") == PRUNED.format:
        return loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(f"{weights} holds a {type(loaded).__name__}, expected a state dict")
    return loaded


def load_pruned(base_model: nn.Module, plan: Mapping | str | os.PathLike,
                weights: Mapping[str, torch.Tensor] | str | os.PathLike | None = None) -> nn.Module:
    """Rebuild a pruned model: cut the plan's units from the unpruned ``base_model`` and load the weights.

    Every check (plan format, architecture fingerprint, removed units, weight names and shapes) runs
    before the model is changed.

    Args:
        base_model: the unpruned model built from the same config (changed in place and returned).
        plan: the plan (dict, JSON text or path to a plan JSON), or, with ``weights=None``, the path of a
            :func:`save_pruned` checkpoint holding both.
        weights: the pruned state dict, or a path to one (a plain state dict or a :func:`save_pruned`
            checkpoint); read with ``torch.load(weights_only=True)``.

    Returns:
        ``base_model``, pruned, with the weights loaded.

    Raises:
        ValueError: the plan or the weights do not fit ``base_model``.
    """
    source = f" of {os.fspath(weights or plan)!r}" if isinstance(weights or plan, (str, os.PathLike)) else ""
    if weights is None:
        if not isinstance(plan, (str, os.PathLike)):
            raise ValueError("no weights given: pass weights (a state dict or a path), or as plan the path of a "
                             "save_pruned checkpoint, which holds both")
        plan, weights = read_checkpoint(plan)
    plan = read_plan(plan)
    state = _load_weights(weights)
    graph = check_plan(base_model, plan)
    expected = pruned_shapes(base_model, graph, plan_removed(plan))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
             if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise ValueError(f"the weights{source} do not fit this plan on this model: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, wrong shapes {wrong[:5]}")
    apply_plan_(base_model, plan)
    base_model.load_state_dict(dict(state), strict=True)
    return base_model
