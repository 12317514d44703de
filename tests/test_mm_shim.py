"""The mmcv-lite shim: mmseg imports, and a missing compiled op fails loudly only when called."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("mmcv")

from cpd.mm import shim  # noqa: E402

pytestmark = pytest.mark.mm
LITE = pytest.mark.skipif(shim.has_compiled_ops(), reason="mmcv has real compiled ops")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


def test_missing_op_raises_naming_the_op() -> None:
    ext = shim.MissingOpsModule("mmcv._ext", ["nms", "roi_align_forward"])
    assert callable(ext.nms)
    with pytest.raises(RuntimeError, match=r"mmcv compiled op 'nms' is not available with mmcv-lite"):
        ext.nms(1, 2, iou_threshold=0.5)
    # Ops not listed at load time are stubbed too, and only fail when called.
    with pytest.raises(RuntimeError, match="'ms_deform_attn_forward'"):
        ext.ms_deform_attn_forward()


def test_module_dunders_are_not_stubbed() -> None:
    ext = shim.MissingOpsModule("mmcv._ext")
    assert not hasattr(ext, "__path__")
    assert not hasattr(ext, "__file__")


@LITE
def test_install_is_idempotent() -> None:
    from mmcv.utils import ext_loader

    shim.install_mmcv_shim()
    patched = ext_loader.load_ext
    assert shim.is_installed()
    assert shim.install_mmcv_shim() is False
    assert ext_loader.load_ext is patched


@LITE
def test_mmseg_import_needs_the_shim() -> None:
    result = _python("import mmseg.models")
    assert result.returncode != 0
    assert "mmcv._ext" in result.stderr


@LITE
def test_mmseg_models_import_and_real_op_fails_clearly() -> None:
    code = (
        "import cpd.mm  # installs the shim\n"
        "import mmseg.models\n"
        "from mmseg.registry import MODELS\n"
        "import torch\n"
        "from mmcv.ops import nms\n"
        "try:\n"
        "    nms(torch.rand(3, 4), torch.rand(3), 0.5)\n"
        "except RuntimeError as error:\n"
        "    print('RAISED', error)\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "RAISED mmcv compiled op 'nms' is not available with mmcv-lite" in result.stdout
