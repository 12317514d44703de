"""Propagation rules: how each aten operator moves and ties channel labels.

A rule is ``rule(ctx, func, args, kwargs, outs) -> list[list[Field]]``: given the operator's arguments
(tensors among them carry fields, read with ``ctx.fields(t)``) and its tensor outputs, it records
equalities, coarse labels or blocks in ``ctx.space`` and returns the fields of each output.
Rules register by operator name (the overload packet, e.g. ``"add"``) with :func:`register_rule`.
An operator without a rule blocks every label it touches: never a silent wrong grouping.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

RULES: dict[str, Callable[..., Any]] = {}


def register_rule(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a propagation rule for the aten operators ``names`` (overload packet names)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def rule_for(name: str) -> Callable[..., Any] | None:
    """The rule registered for operator ``name``, or None."""
    return RULES.get(name)


from cpd.graph.rules import contract, layout, norm, pointwise  # noqa: E402,F401  (fill the registry)
