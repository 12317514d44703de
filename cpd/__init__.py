"""cpd: Comb, Prune, Distill — structured pruning for vision models.

The core (this package, minus ``cpd.mm`` and ``cpd.export``) needs torch and numpy only.
"""
from cpd.graph import DependencyGraph, Group, Member, fingerprint
from cpd.combing import comb
from cpd.graph.deps_io import load_deps, save_deps
from cpd.surgery import cut_, prepare_
from cpd.prune import (IMPORTANCES, PruneConfig, Pruner, load_pruned, register_importance,
                       save_pruned)

__version__ = "0.1.0"
__all__ = ["DependencyGraph", "Group", "IMPORTANCES", "Member", "PruneConfig", "Pruner", "comb", "cut_", "fingerprint",
           "load_deps", "load_pruned", "prepare_", "register_importance", "save_deps", "save_pruned"]
