"""Importance: which units of a group matter least.  A criterion is a callable ``group -> scores per unit``."""
from cpd.importance.cost import METRICS, CostModel, channels_per_unit
from cpd.importance.registry import (IMPORTANCES, Importance, ImportanceContext, build_importance,
                                     register_importance)
from cpd.importance.saliency import SaliencyAccumulator
from cpd.importance import criteria  # noqa: F401  (registers the built-in criteria)

__all__ = ["IMPORTANCES", "METRICS", "CostModel", "Importance", "ImportanceContext", "SaliencyAccumulator",
           "build_importance", "channels_per_unit", "register_importance"]
