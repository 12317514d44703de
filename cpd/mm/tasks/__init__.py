"""The task layer: one adapter per vision task, found from the config or model itself.

``task_of(cfg)`` picks the adapter whose library owns the config (its ``default_scope``, else its
model type); ``task_of(model)`` the one whose library built the model. A new task registers an
instance of a :class:`~cpd.mm.tasks.base.Task` subclass with :func:`register_task`; the callers
(``cpd comb/check``, export, ...) need no change.
"""

from __future__ import annotations

import os

import torch
from mmengine.config import Config
from torch import nn

from cpd.mm.build import Size, load_config

from cpd.mm.tasks.base import Task
from cpd.mm.tasks.classification import Classification
from cpd.mm.tasks.detection import Detection
from cpd.mm.tasks.segmentation import Segmentation

#: every registered task, by name, in the order they are asked
TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to the tasks :func:`task_of` asks.

    Args:
        task: the adapter.

    Returns:
        ``task``.

    Raises:
        ValueError: a task of that name is registered already.
    """
    if task.name in TASKS:
        raise ValueError(f"a task named {task.name!r} is registered already")
    TASKS[task.name] = task
    return task


def task_of(cfg_or_model: Config | nn.Module) -> Task:
    """Find the task of a config or of a model built from one.

    Args:
        cfg_or_model: a full config, or a built model.

    Returns:
        The task adapter.

    Raises:
        ValueError: no registered task owns it (the message names the scope or class seen and
            the tasks there are).
    """
    if isinstance(cfg_or_model, nn.Module):
        found = [t for t in TASKS.values() if t.owns_model(cfg_or_model)]
        seen = f"model class {type(cfg_or_model).__name__}"
    else:
        found = [t for t in TASKS.values() if t.owns_config(cfg_or_model)]
        seen = (f"default_scope {cfg_or_model.get('default_scope')!r}, model type "
                f"{cfg_or_model.get('model', {}).get('type')!r}")
    if not found:
        known = ", ".join(f"{t.name} ({t.scope})" for t in TASKS.values())
        raise ValueError(f"no task owns this config or model ({seen}); known tasks: {known}")
    return found[0]


for _task in (Segmentation(), Classification(), Detection()):
    register_task(_task)


def build_model(cfg: Config | str | os.PathLike[str], input_size: Size | None = None) -> nn.Module:
    """Build the model of a config (segmentor, classifier, detector) on CPU without any checkpoint.

    Args:
        cfg: a config, or a path or shipped name for :func:`load_config`.
        input_size: see :func:`model_config`.

    Returns:
        The model on CPU, in train mode, with its ``data_preprocessor``.

    Raises:
        FileNotFoundError: the config cannot be found.
        ValueError: ``input_size`` is not two positive integers, or no task owns the config.
    """
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    return task_of(cfg).build_model(cfg, input_size)


def example_inputs(
    cfg_or_model: Config | nn.Module, size: Size | None = None, batch: int = 2, seed: int = 0
) -> torch.Tensor:
    """Make a random, already normalised image batch for a config or model.

    Args:
        cfg_or_model: a config or a model built from one.
        size: ``(H, W)``; by default the data preprocessor's ``size``, else the
            task's default (512x512 segmentation, 224x224 classification, 320x320 detection).
        batch: batch size.
        seed: seed of the generator, so that calls are repeatable.

    Returns:
        A float tensor of shape ``(batch, C, H, W)``.

    Raises:
        ValueError: ``size`` or ``batch`` is not positive.
    """
    try:
        task = task_of(cfg_or_model)
    except ValueError:  # a model of no known library (a wrapper): mmseg's defaults
        task = TASKS["segmentation"]
    return task.example_inputs(cfg_or_model, size=size, batch=batch, seed=seed)


def task_name(cfg_or_model: Config | nn.Module) -> str:
    """The name of the task of a config or model (``segmentation`` for a model of no known library)."""
    try:
        return task_of(cfg_or_model).name
    except ValueError:
        return "segmentation"


def pruned_type(cfg: Config) -> str:
    """The ``MODELS`` type of a pruned-model file in ``cfg``'s library (mmseg's first name, else ``PrunedModel``)."""
    return "PrunedSegmentor" if task_name(cfg) == "segmentation" else "PrunedModel"


__all__ = ["TASKS", "Task", "build_model", "example_inputs", "pruned_type", "register_task", "task_name", "task_of"]
