"""``comb``: trace a model, build its groups, and prove every prunable group can really be cut.

It orchestrates the two packages below it: :mod:`cpd.surgery` prepares the model (prunable stand-ins) and
verifies cuts on copies, :mod:`cpd.graph` traces the model and builds the groups.  Neither of them knows
the other's part of the job.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cpd.graph.forward import ForwardFn
from cpd.graph.group import DependencyGraph, build_groups, fingerprint
from cpd.graph.labels import LabelSpace
from cpd.graph.tracer import trace
from cpd.surgery.adapters import prepare_
from cpd.surgery.verify import verify_cuts_


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix.rstrip(".") + ".")


def check_exclude(model: nn.Module, exclude: Sequence[str]) -> None:
    """Refuse ``exclude`` names that match no parameter, buffer or module of ``model``.

    Raises:
        ValueError: naming them (a typo would otherwise silently exclude nothing).
    """
    if isinstance(exclude, str) or not all(isinstance(e, str) and e for e in exclude):
        raise ValueError(f"exclude={exclude!r} must be a list of module or parameter names")
    known = [n for n, _ in model.named_modules() if n] + [n for n, _ in model.named_parameters()] + [
        n for n, _ in model.named_buffers()]
    unknown = [e for e in exclude if not any(_matches(n, e) for n in known)]
    if unknown:
        raise ValueError(f"exclude={list(unknown)!r} matches no parameter or module of the model; give module "
                         "names as in model.named_modules() (e.g. 'decode_head.conv_seg') or parameter names")


def exclude_(space: LabelSpace, exclude: Sequence[str]) -> None:
    """Block every traced axis of a parameter or buffer named by (or inside a module named by) ``exclude``."""
    for ref in list(space.axes):
        if ref.kind != "attr" and any(_matches(ref.name, e) for e in exclude):
            start, size = space.axes[ref]
            space.block(torch.arange(start, start + size), f"excluded by the user ('{ref.name}')")


def comb(model: nn.Module, example_inputs: Sequence[Any], forward_fn: ForwardFn | None = None,
         exclude: Sequence[str] = (), verify: bool = True) -> DependencyGraph:
    """Derive the channel-dependency groups of ``model``.

    The model is prepared in place first (modules such as ``nn.MultiheadAttention`` are re-classed to
    functionally identical prunable versions; parameter names do not change).

    Args:
        model: any ``nn.Module``.
        example_inputs: inputs for one forward call (a batch of 2 is best: it shows batch/channel mix-ups).
        forward_fn: ``forward_fn(model, *example_inputs)`` returning every output used in training
            (e.g. all heads of a segmentor); default ``model(*example_inputs)``.
        exclude: parameter or module names (prefixes) whose channels must never be pruned.
        verify: cut every prunable group on a copy and mark the groups that break it not prunable
            (:func:`cpd.surgery.verify.verify_cuts_`).

    Returns:
        The dependency graph.

    Raises:
        ValueError: an ``exclude`` name matches nothing in the model.
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    inputs = tuple(example_inputs)
    check_exclude(model, exclude)
    prepare_(model)
    try:
        space, tracer, members = trace(model, inputs, forward_fn)
    except Exception:  # noqa: BLE001  (any error of the shape-only run: the full run decides)
        # the forward read values the shape-only run leaves undefined (ViG's k nearest neighbours index by
        # distances a matrix product computes): trace again computing everything
        space, tracer, members = trace(model, inputs, forward_fn, shape_only=False)
    exclude_(space, exclude)
    names = {name: tid for tid, (name, _) in members.items()}
    unreached = [ref for ref in space.axes
                 if ref.kind != "attr" and names.get(ref.name) not in tracer.reached]
    graph = build_groups(space, unreached, fingerprint(model))
    graph.input_shapes = [list(t.shape) for t in inputs if isinstance(t, torch.Tensor)]
    graph.notes = {"unknown_ops": dict(tracer.unknown_ops),
                   "unreached": sorted({r.name for r in unreached})}
    if verify:
        verify_cuts_(model, graph, inputs, forward_fn)
    return graph


__all__ = ["check_exclude", "comb"]
