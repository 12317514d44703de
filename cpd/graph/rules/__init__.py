"""Propagation rules: how each aten operator moves and ties channel labels.

A rule is ``rule(ctx, func, args, kwargs, outs) -> list[list[Field]]``: given the operator's arguments
(tensors among them carry fields, read with ``ctx.fields(t)``) and its tensor outputs, it records
equalities, coarse labels or blocks in ``ctx.space`` and returns the fields of each output.
Rules register by operator name (the overload packet, e.g. ``"add"``) with :func:`register_rule`.
An operator without a rule blocks every label it touches: never a silent wrong grouping.
"""
from cpd.graph.rules.registry import RULES, register_rule, rule_for
from cpd.graph.rules import contract, layout, norm, pointwise  # noqa: F401  (fill the registry)

__all__ = ["RULES", "register_rule", "rule_for"]
