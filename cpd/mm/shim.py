"""Stand-ins for mmcv's compiled ops, so mmsegmentation imports under mmcv-lite.

mmcv-lite ships no compiled extension (``mmcv._ext``), yet ``mmseg`` imports
``mmcv.ops`` at import time, and every ``mmcv.ops`` module calls
``mmcv.utils.ext_loader.load_ext('_ext', [...])`` at module level. We replace
``load_ext`` at run time (site-packages stay untouched) with one that returns a
module whose functions raise a clear error when called. Importing works; only a
model that really runs a compiled op fails, and it says which op and why.
"""

from __future__ import annotations

import importlib.util
import types
from collections.abc import Callable, Sequence

_MARK = "__cpd_mmcv_shim__"


class MissingOpsModule(types.ModuleType):
    """A module whose every public attribute is an op that raises when called."""

    def __init__(self, name: str, funcs: Sequence[str] = ()) -> None:
        super().__init__(name, "stand-in for an mmcv extension missing in mmcv-lite")
        for func in funcs:
            setattr(self, func, missing_op(func))

    def __getattr__(self, name: str) -> Callable[..., None]:
        # Dunder look-ups (__path__, __spec__, ...) must fail as on a real module.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        op = missing_op(name)
        setattr(self, name, op)
        return op


def missing_op(name: str) -> Callable[..., None]:
    """Make a stand-in for the compiled mmcv op ``name``.

    Args:
        name: the op's name in ``mmcv._ext``.

    Returns:
        A function that raises ``RuntimeError`` naming the op whenever called.
    """

    def op(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            f"mmcv compiled op {name!r} is not available with mmcv-lite; "
            "this model needs a full mmcv build with compiled ops, "
            "or a config whose layers avoid mmcv.ops"
        )

    op.__name__ = op.__qualname__ = name
    return op


def _load_missing_ext(name: str, funcs: Sequence[str]) -> MissingOpsModule:
    return MissingOpsModule(f"mmcv.{name}", funcs)


setattr(_load_missing_ext, _MARK, True)


def has_compiled_ops() -> bool:
    """Tell whether the installed mmcv has its compiled extension.

    Returns:
        True for a full mmcv build, False for mmcv-lite.
    """
    return importlib.util.find_spec("mmcv._ext") is not None


def install_mmcv_shim() -> bool:
    """Make ``mmcv.utils.ext_loader.load_ext`` return stand-in op modules.

    Call before the first ``import mmseg``. Safe to call any number of times;
    does nothing when mmcv has real compiled ops.

    Returns:
        True when this call installed the shim, False when it was already
        installed or not needed.

    Raises:
        ModuleNotFoundError: mmcv is not installed (install the ``mm`` extra).
    """
    from mmcv.utils import ext_loader

    if is_installed() or has_compiled_ops():
        return False
    ext_loader.load_ext = _load_missing_ext
    return True


def is_installed() -> bool:
    """Tell whether the shim is in place.

    Returns:
        True when ``load_ext`` is the stand-in loader.
    """
    from mmcv.utils import ext_loader

    return getattr(ext_loader.load_ext, _MARK, False)
