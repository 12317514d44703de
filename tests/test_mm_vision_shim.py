"""The torchvision stand-in: only where torchvision cannot import, and loud when anything in it is called."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmcv")

from cpd.mm import vision_shim  # noqa: E402

pytestmark = pytest.mark.mm


def _python(code: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None
    if path is not None:
        import os

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          check=False, env=env)


def test_placeholder_raises_naming_what_was_called() -> None:
    module = vision_shim.StandInModule("torchvision.ops")
    with pytest.raises(RuntimeError, match=r"torchvision\.ops\.box_iou was called, but torchvision cannot"):
        module.box_iou(1, 2)
    # attributes of attributes are placeholders too, and name their whole path
    with pytest.raises(RuntimeError, match=r"torchvision\.ops\.boxes\.nms was called"):
        module.boxes.nms()


def test_placeholder_can_be_subclassed_and_read_but_not_built() -> None:
    transforms = vision_shim.StandInModule("torchvision.transforms")

    class Crop(transforms.RandomResizedCrop):  # mmpretrain does this at import time
        pass

    assert transforms.InterpolationMode.BILINEAR is not transforms.InterpolationMode.NEAREST
    with pytest.raises(RuntimeError, match="Crop was called"):
        Crop(224)


def test_module_dunders_and_listing_are_empty() -> None:
    module = vision_shim.StandInModule("torchvision")
    assert not hasattr(module, "__file__")
    with pytest.raises(ModuleNotFoundError, match="torchvision cannot be imported here"):
        module.__version__  # noqa: B018 - what mmengine's environment report catches
    assert dir(module) == []  # mmpretrain registers every capitalised name it lists
    assert vision_shim.is_stand_in(module)
    assert not vision_shim.is_stand_in(sys)


def test_mmpretrain_and_mmdet_import_with_the_stand_in() -> None:
    pytest.importorskip("mmpretrain")
    pytest.importorskip("mmdet")
    code = (
        "import cpd.mm, sys\n"
        "from cpd.mm.vision_shim import is_stand_in, stand_in_installed\n"
        "import mmpretrain.models, mmpretrain.datasets, mmdet.models\n"
        "print('REAL' if not stand_in_installed() else 'STAND-IN', is_stand_in(sys.modules['torchvision']))\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    if vision_shim.real_torchvision_imports():
        assert "REAL False" in result.stdout
    else:
        assert "STAND-IN True" in result.stdout


#: loads the stand-in's module alone, without the cpd.mm package (which installs it on import)
LOAD_ALONE = (
    "import importlib.util\n"
    f"spec = importlib.util.spec_from_file_location('vision_shim', {vision_shim.__file__!r})\n"
    "shim = importlib.util.module_from_spec(spec); spec.loader.exec_module(shim)\n"
    "install_torchvision_stand_in, stand_in_installed = shim.install_torchvision_stand_in, shim.stand_in_installed\n"
)


def test_a_real_torchvision_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text("__version__ = 'real'\n")
    code = LOAD_ALONE + (
        "assert not stand_in_installed()\n"
        "assert install_torchvision_stand_in() is False and not stand_in_installed()\n"
        "import torchvision; print(torchvision.__version__)\n"
    )
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "real"


def test_a_torchvision_that_fails_to_load_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text(
        "from . import ops\nraise OSError('libc10_cuda.so: cannot open shared object file')\n")
    (tmp_path / "torchvision" / "ops.py").write_text("x = 1\n")
    code = LOAD_ALONE + (
        "is_stand_in = shim.is_stand_in\n"
        "assert install_torchvision_stand_in() is True  # the real import fails\n"
        "assert install_torchvision_stand_in() is False and stand_in_installed()  # once only\n"
        "import torchvision.ops\n"
        "assert is_stand_in(torchvision) and is_stand_in(torchvision.ops)  # no half-imported real module\n"
        "try:\n"
        "    torchvision.ops.box_iou(1, 2)\n"
        "except RuntimeError as error:\n"
        "    print('RAISED', error)\n"
    )
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "RAISED torchvision.ops.box_iou was called" in result.stdout
