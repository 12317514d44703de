"""Comb: derive the channel-dependency groups of any model by tracing it on CPU."""
from cpd.graph.group import DependencyGraph, Group, Member, fingerprint

__all__ = ["DependencyGraph", "Group", "Member", "fingerprint"]
