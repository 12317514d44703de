"""OpenMMLab checkpoints, read without running their code.

An mmengine checkpoint holds the weights, the optimizer and scheduler states, ``meta`` (plain data)
and the message hub, whose history buffers pickle as numpy arrays and scalars plus the statistic
methods of :class:`mmengine.logging.HistoryBuffer`, written as ``getattr(HistoryBuffer, 'mean')``.
:data:`ALLOWLIST` is exactly that, measured by saving checkpoints with mmengine's Runner (a plain
mmseg training, a pruning run, a distillation run: ``tests/test_mm_checkpoints.py`` repeats it) and
listing ``torch.serialization.get_unsafe_globals_in_checkpoint``. ``builtins.getattr`` itself is a
gadget (``getattr(os, 'system')``); the file's ``getattr`` is bound to :func:`history_statistic`,
which resolves only those four methods of that one class.

:func:`safe_checkpoint_loading` routes mmengine's own loads (``load_from``, ``resume``, the test
loop's checkpoint) through :func:`cpd.safe_load.load_torch` with this allowlist. A file the user
trusts is named, alone, in ``trusted`` (or in a config's ``trusted_checkpoints`` list); there is no
switch that trusts every file.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from cpd.safe_load import check_torch, load_torch

#: The config key (and ``--cfg-options`` key) listing checkpoint files the user trusts in full.
TRUST_KEY = "trusted_checkpoints"
OPT_IN = (f"if you trust this file, name it alone in the config: {TRUST_KEY} = ['FILE'] in the config file "
          f"(or --cfg-options {TRUST_KEY}=\"['FILE']\")")

#: The statistic methods a HistoryBuffer pickles by name (mmengine 0.10 registers these four).
HISTORY_STATISTICS = ("min", "max", "mean", "current")


def history_statistic(owner: Any, name: str) -> Any:
    """The stand-in for ``builtins.getattr`` in a checkpoint: ``HistoryBuffer.<statistic>`` and nothing else.

    Raises:
        pickle.UnpicklingError: any other object or attribute (the file is then refused).
    """
    import pickle

    if owner is HistoryBuffer and name in HISTORY_STATISTICS:
        return getattr(HistoryBuffer, name)
    owner_name = getattr(owner, "__name__", type(owner).__name__)
    raise pickle.UnpicklingError(f"Unsupported class builtins.getattr({owner_name},{name!r})")


def _numpy_allowlist() -> list[Any]:
    """numpy arrays, dtypes and scalars, under the module names of numpy 2 and of numpy 1 (older files)."""
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    entries: list[Any] = [np.ndarray, np.dtype]
    for fn in (core._reconstruct, core.scalar):
        entries += [(fn, f"numpy._core.multiarray.{fn.__name__}"), (fn, f"numpy.core.multiarray.{fn.__name__}")]
    # numpy >= 1.25 pickles a dtype through its class (numpy.dtypes.Float64DType...).
    entries += sorted({type(np.dtype(c)) for c in np.typecodes["All"] if c not in "MmOV"} - {np.dtype},
                      key=lambda t: t.__name__)
    return entries


#: Globals an mmengine / mmseg checkpoint may name, besides the tensors and containers torch allows.
ALLOWLIST: tuple[Any, ...] = (
    OrderedDict,
    HistoryBuffer,
    (history_statistic, "builtins.getattr"),
    *_numpy_allowlist(),
)

_trusted: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("cpd_trusted_checkpoints",
                                                                          default=frozenset())


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def is_trusted(path: str | os.PathLike[str], trusted: Iterable[str | os.PathLike[str]] = ()) -> bool:
    """Whether ``path`` is named in ``trusted`` or in the trusted files of the enclosing loading block."""
    key = _key(path)
    return key in _trusted.get() or key in {_key(t) for t in trusted}


def load_checkpoint(path: str | os.PathLike[str], what: str = "checkpoint",
                    trusted: Iterable[str | os.PathLike[str]] = (), map_location: Any = "cpu") -> Any:
    """Read an OpenMMLab checkpoint (or any torch file) with weights_only and :data:`ALLOWLIST`.

    Args:
        path: the file.
        what: what it is to the user, for the messages (``"teacher_checkpoint"``).
        trusted: files read in full even so (``path`` among them opts it in).
        map_location: as for :func:`torch.load`.

    Raises:
        FileNotFoundError, cpd.safe_load.BadFileError, cpd.safe_load.RefusedGlobalError: one line naming
            the file (see :func:`cpd.safe_load.load_torch`).
    """
    return load_torch(path, what, ALLOWLIST, trusted=is_trusted(path, trusted), opt_in=OPT_IN,
                      map_location=map_location)


def check_checkpoint(path: str | os.PathLike[str], what: str = "checkpoint",
                     trusted: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse, without reading the tensors, a checkpoint that :func:`load_checkpoint` would refuse."""
    check_torch(path, what, ALLOWLIST, trusted=is_trusted(path, trusted), opt_in=OPT_IN)


def state_dict_of(path: str | os.PathLike[str], what: str = "checkpoint",
                  trusted: Iterable[str | os.PathLike[str]] = ()) -> dict[str, torch.Tensor]:
    """The model weights of an mmengine checkpoint or a plain state dict (a DDP ``module.`` prefix dropped).

    Raises:
        FileNotFoundError: no such file.
        cpd.safe_load.BadFileError: unreadable, refused, or holding no state dict of tensors.
    """
    from cpd.safe_load import BadFileError

    ckpt = load_checkpoint(path, what, trusted)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadFileError(f"{what} {os.fspath(path)!r} holds no state dict of tensors; expected an mmengine "
                           "checkpoint ({'state_dict': ...}) or a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def trusted_in(cfg: Any) -> list[str]:
    """The files a config lists under :data:`TRUST_KEY` (an empty list when it lists none).

    Raises:
        ValueError: the key holds something other than a list of paths.
    """
    value = cfg.get(TRUST_KEY) if hasattr(cfg, "get") else None
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)) or not all(isinstance(v, (str, os.PathLike)) for v in value):
        raise ValueError(f"{TRUST_KEY}={value!r}: must be a list of checkpoint paths")
    return [os.fspath(v) for v in value]


@contextlib.contextmanager
def safe_checkpoint_loading(trusted: Iterable[str | os.PathLike[str]] = ()) -> Iterator[None]:
    """Inside this block, mmengine reads local checkpoints through :func:`load_checkpoint`.

    mmengine 0.10.7 reads ``load_from``, ``resume`` and test checkpoints with a bare ``torch.load``
    in the loader it registers for local paths; the block registers this module's loader for them
    instead (restored on exit), so those loads are weights-only with :data:`ALLOWLIST`, answer a bad
    file in one line, and read in full only the files in ``trusted``. Other loads inside the block
    (a URL's download) get the allowlist through ``torch.serialization.safe_globals``.

    Args:
        trusted: checkpoint files the user trusts; with the files of any enclosing block.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_local(filename: str, map_location: Any = None) -> Any:
        return load_checkpoint(filename, "checkpoint", map_location=map_location)

    schemes = CheckpointLoader._schemes
    token = _trusted.set(_trusted.get() | {_key(t) for t in trusted})
    CheckpointLoader._schemes = OrderedDict(schemes)
    CheckpointLoader.register_scheme(prefixes="", loader=load_local, force=True)
    try:
        with torch.serialization.safe_globals(list(ALLOWLIST)):
            yield
    finally:
        CheckpointLoader._schemes = schemes
        _trusted.reset(token)


def resume_file(work_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint mmengine's ``resume=True`` would read in ``work_dir`` (None: it starts afresh)."""
    pointer = Path(work_dir) / "last_checkpoint"
    text = pointer.read_text().strip() if pointer.is_file() else ""
    return Path(text) if text else None


def state_mismatch(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading strictly into ``model``, in a few words (None: it fits).

    A model of another config differs in dozens of keys; the counts and the first few names say so on
    one line, where torch's own message lists them all.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = [f"{len(keys)} {label} (first: {', '.join(keys[:3])})"
             for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("tensors of another shape, file vs model", shapes)) if keys]
    return "; ".join(parts) or None
