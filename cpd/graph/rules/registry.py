"""The registry of propagation rules: aten operator name -> rule (see :mod:`cpd.graph.rules`)."""
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

