"""Keep a runner consistent when the model it trains changes shape.

Cutting units replaces the affected ``nn.Parameter`` objects, so everything that holds the old ones must
follow: the optimizer's parameter groups (whose state, e.g. AdamW's moments, is sliced with the same
indices, so training goes on exactly where the masked model was) and the DistributedDataParallel
wrapper (whose reducer is bound to the old parameters, and is rebuilt around the same module).
The parameter schedulers hold the optimizer, not the parameters, and need nothing.
"""
from __future__ import annotations

import copy
import gc
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from mmengine.model import is_model_wrapper
from mmengine.registry import MODEL_WRAPPERS
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cpd.surgery.cut import KeptSlices



def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a model wrapper (DDP and friends), or ``model`` itself."""
    return model.module if is_model_wrapper(model) else model


def prune_target(model: nn.Module) -> nn.Module:
    """What a pruning hook prunes: the student of a distiller, else the (unwrapped) model."""
    base = unwrap(model)
    student = getattr(base, "student", None)
    return student if isinstance(student, nn.Module) else base


def _slice(value: Any, old: torch.Tensor, cuts: list[tuple[int, np.ndarray]], name: str, key: str) -> Any:
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value
    if tuple(value.shape) != tuple(old.shape):
        raise ValueError(f"optimizer state {key!r} of parameter '{name}' has shape {tuple(value.shape)}, not the "
                         f"parameter's {tuple(old.shape)}: this optimizer's state cannot follow the cut")
    for dim, keep in cuts:
        value = value.index_select(dim, torch.as_tensor(keep, dtype=torch.long, device=value.device))
    return value.clone()


def remap_optimizer_(optimizer: torch.optim.Optimizer, old: Mapping[str, nn.Parameter],
                     new: Mapping[str, nn.Parameter], cuts: KeptSlices) -> int:
    """Point ``optimizer`` at the new parameters and slice their state like the parameters were cut.

    Args:
        optimizer: a torch optimizer whose groups hold (some of) the ``old`` parameters.
        old: name -> parameter before the cut (``named_parameters()`` of the pruned module).
        new: name -> parameter after the cut.
        cuts: the indices each axis of each cut tensor keeps (:func:`cpd.surgery.kept_slices`).

    Returns:
        How many parameters were replaced.

    Raises:
        KeyError: a parameter of ``old`` is missing from ``new``.
        ValueError: a state tensor whose shape is not the parameter's (e.g. a factored second moment).
    """
    name_of = {id(p): name for name, p in old.items()}
    replaced = 0
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            name = name_of.get(id(p))
            if name is None:
                params.append(p)
                continue
            q = new[name]
            if q is not p:
                state = optimizer.state.pop(p, None)
                if state:
                    optimizer.state[q] = {k: _slice(v, p, cuts.get(name, []), name, k) for k, v in state.items()}
                replaced += 1
            params.append(q)
        group["params"] = params
    return replaced


def rewrap_(runner: Any) -> None:
    """Rebuild ``runner.model``'s distributed wrapper around the same module (no-op when not wrapped).

    Mirrors ``Runner.wrap_model`` minus the device move and the SyncBN conversion, which already
    happened: building a new DDP re-registers its gradient hooks on the current parameters and
    broadcasts rank 0's parameters and buffers (identical on every rank here anyway).
    """
    old = runner.model
    if not is_model_wrapper(old):
        return
    module = old.module
    wrapper_cfg = copy.deepcopy(runner.cfg.get("model_wrapper_cfg"))
    if wrapper_cfg is None:
        wrapper_cfg = dict(type="MMDistributedDataParallel", broadcast_buffers=False,
                           find_unused_parameters=runner.cfg.get("find_unused_parameters", False))
    wrapper_cfg.setdefault("type", "MMDistributedDataParallel")
    default_args: dict[str, Any] = {"module": module}
    wrapper_type = MODEL_WRAPPERS.get(wrapper_cfg["type"]) if isinstance(wrapper_cfg["type"], str) \
        else wrapper_cfg["type"]
    if isinstance(wrapper_type, type) and issubclass(wrapper_type, DistributedDataParallel):
        default_args["device_ids"] = [int(os.environ.get("LOCAL_RANK", 0))]
    runner.model = None
    del old
    gc.collect()  # the old reducer's hooks on parameters that were not cut must go before the next backward
    runner.model = MODEL_WRAPPERS.build(wrapper_cfg, default_args=default_args)
