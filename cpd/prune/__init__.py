"""Prune: score groups, mask the least important units while training, then cut them for real.

Public API: :class:`Pruner`, :class:`PruneConfig`, :func:`save_pruned`, :func:`load_pruned`, the plan
helpers, :func:`reestimate_batch_norm_` (batch norm statistics after a cut), and the importance registry
(``IMPORTANCES``, ``register_importance``) from :mod:`cpd.importance`.
"""
from cpd.importance import IMPORTANCES, register_importance
from cpd.prune.batch_norm import reestimate_batch_norm_
from cpd.prune.checkpoint import load_pruned, read_checkpoint, save_pruned
from cpd.prune.config import PruneConfig
from cpd.prune.plan import apply_plan_, make_plan, read_plan, save_plan
from cpd.prune.pruner import Pruner
from cpd.prune.state import PruneEvent

__all__ = ["IMPORTANCES", "PruneConfig", "PruneEvent", "Pruner", "apply_plan_", "load_pruned", "make_plan",
           "read_checkpoint", "read_plan", "reestimate_batch_norm_", "register_importance", "save_plan",
           "save_pruned"]
