"""mmengine / mmsegmentation integration: the only package that imports them.

Importing it installs the mmcv-lite op shim (see :mod:`cpd.mm.shim`), so
``import mmseg`` works afterwards.
"""

from cpd.mm.shim import install_mmcv_shim

install_mmcv_shim()

from cpd.mm.build import build_model, example_inputs, load_config, resolve_config  # noqa: E402
from cpd.mm.entry import output_modules, seg_forward  # noqa: E402
from cpd.mm import adapters  # noqa: E402,F401  (registers prunable stand-ins for mmseg attention modules)

__all__ = [
    "build_model",
    "example_inputs",
    "install_mmcv_shim",
    "load_config",
    "output_modules",
    "resolve_config",
    "seg_forward",
]
