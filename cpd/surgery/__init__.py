"""Surgery: physically cutting units out of a model, and the per-layer fixers and adapters it relies on."""
from cpd.surgery.adapters import prepare_, register_adapter
from cpd.surgery.cut import cut_, validate_plan
from cpd.surgery.fixers import register_fixer

__all__ = ["cut_", "prepare_", "register_adapter", "register_fixer", "validate_plan"]
