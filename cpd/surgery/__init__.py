"""Surgery: physically cutting units out of a model, the per-layer fixers and adapters it relies on, and the
verification of cuts on copies (``verify``)."""
from cpd.surgery.adapters import prepare_, register_adapter
from cpd.surgery.cut import Removed, cut_, kept_slices, validate_plan
from cpd.surgery.fixers import register_fixer

__all__ = ["Removed", "cut_", "kept_slices", "prepare_", "register_adapter", "register_fixer", "validate_plan"]
