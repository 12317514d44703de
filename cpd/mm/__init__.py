"""OpenMMLab integration (mmengine, mmsegmentation, mmpretrain, mmdet): the only package that imports them.

Importing it installs the mmcv-lite op shim (see :mod:`cpd.mm.shim`) and, where torchvision
cannot be imported, a torchvision stand-in (see :mod:`cpd.mm.vision_shim`), so ``import mmseg``,
``import mmpretrain.models`` and ``import mmdet.models`` work afterwards.
"""

from cpd.mm.shim import install_mmcv_shim
from cpd.mm.vision_shim import install_torchvision_stand_in

install_mmcv_shim()
install_torchvision_stand_in()

from cpd.mm.build import load_config, resolve_config  # noqa: E402
from cpd.mm.tasks import build_model, example_inputs  # noqa: E402
from cpd.mm.entry import output_modules, seg_forward  # noqa: E402
from cpd.mm import adapters  # noqa: E402,F401  (registers prunable stand-ins for mmseg attention modules)

__all__ = [
    "build_model",
    "example_inputs",
    "install_mmcv_shim",
    "install_torchvision_stand_in",
    "load_config",
    "output_modules",
    "resolve_config",
    "seg_forward",
]
