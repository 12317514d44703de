"""A torchvision stand-in, so mmpretrain and mmdet import where torchvision cannot.

``import mmpretrain.models`` reaches ``torchvision.ops.boxes`` through a metric, registering
mmpretrain's data transforms reaches ``torchvision.transforms`` (and subclasses
``transforms.RandomResizedCrop`` at import time), and mmdet's IoU assigner can ask for
``torchvision.ops.box_iou``. None of this is on the path of building or tracing a model. Where
torchvision is missing, or installed but unable to load (a CUDA wheel beside a CPU torch), we put
an import hook in ``sys.meta_path`` that serves ``torchvision`` and every ``torchvision.*`` module
as a stand-in. Every attribute of a stand-in module is a placeholder class: it can be looked up,
subclassed and have attributes read (``InterpolationMode.BILINEAR``), but calling it or anything
read from it raises a ``RuntimeError`` naming what was called. When the real torchvision imports,
nothing is installed and the real one is used.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

_ROOT = "torchvision"
_MARK = "__cpd_torchvision_stand_in__"


def _missing(name: str) -> RuntimeError:
    return RuntimeError(
        f"{name} was called, but torchvision cannot be imported here, so cpd put a stand-in in its "
        "place (it only lets mmpretrain/mmdet import); install a torchvision build that matches "
        "your torch to use it"
    )


class _PlaceholderMeta(type):
    """Metaclass of placeholders: reading an attribute gives another placeholder."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return placeholder(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args: object, **kwargs: object) -> Any:
        raise _missing(cls.__qualname__)


class Placeholder(metaclass=_PlaceholderMeta):
    """Base of every stand-in attribute; subclasses (``class X(transforms.Y)``) raise when built."""


def placeholder(qualname: str) -> type:
    """Make the stand-in for the torchvision object ``qualname``.

    Args:
        qualname: its dotted name, e.g. ``torchvision.ops.box_iou``.

    Returns:
        A class that raises ``RuntimeError`` naming ``qualname`` when called, and whose
        attributes are placeholders too.
    """
    cls = _PlaceholderMeta(qualname.rsplit(".", 1)[-1], (Placeholder,), {"__module__": _ROOT})
    cls.__qualname__ = qualname
    return cls


class StandInModule(types.ModuleType):
    """A torchvision module whose every public attribute is a placeholder."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "stand-in for torchvision, which cannot be imported here")
        self.__path__: list[str] = []  # a package, so that ``import torchvision.x.y`` works
        setattr(self, _MARK, True)

    def __getattr__(self, name: str) -> Any:
        if name == "__version__":
            # Code that asks for the version expects a failed import when torchvision is absent
            # (mmengine's environment report catches ModuleNotFoundError only).
            raise ModuleNotFoundError(
                "torchvision cannot be imported here; cpd put a stand-in in its place", name=_ROOT)
        # Other dunder look-ups (__file__, ...) fail as on a module that lacks them.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        value = placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        # Nothing to list: mmpretrain registers every capitalised name it finds here.
        return []


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``torchvision`` and its submodules as :class:`StandInModule` objects."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname != _ROOT and not fullname.startswith(_ROOT + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return StandInModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the module is made whole in :meth:`create_module`."""


setattr(_StandInFinder, _MARK, True)


def is_stand_in(module: object) -> bool:
    """Tell whether ``module`` is one of the stand-in torchvision modules.

    Args:
        module: any object (typically ``sys.modules['torchvision']``).

    Returns:
        True for a stand-in.
    """
    return isinstance(module, types.ModuleType) and bool(getattr(module, _MARK, False))


def real_torchvision_imports() -> bool:
    """Try to import the real torchvision (once; a stand-in in place counts as no).

    Returns:
        True when ``import torchvision`` works with the installed torch.
    """
    loaded = sys.modules.get(_ROOT)
    if loaded is not None:
        return not is_stand_in(loaded)
    if importlib.util.find_spec(_ROOT) is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken build fails in many ways (OSError, ImportError, RuntimeError)
        for name in [n for n in sys.modules if n == _ROOT or n.startswith(_ROOT + ".")]:
            del sys.modules[name]  # leave no half-imported module behind for the stand-in to meet
        return False
    return True


def install_torchvision_stand_in() -> bool:
    """Serve a torchvision stand-in from now on, unless the real torchvision imports.

    Safe to call any number of times.

    Returns:
        True when this call installed the stand-in; False when the real torchvision is used or
        the stand-in was already in place.
    """
    if any(getattr(finder, _MARK, False) for finder in sys.meta_path):
        return False
    if real_torchvision_imports():
        return False
    sys.meta_path.insert(0, _StandInFinder())
    return True


def stand_in_installed() -> bool:
    """Tell whether the stand-in import hook is in place.

    Returns:
        True when ``import torchvision`` gives the stand-in.
    """
    return any(getattr(finder, _MARK, False) for finder in sys.meta_path)
