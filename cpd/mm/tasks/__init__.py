"""The task layer: one adapter per vision task, found from the config or model itself.

``task_of(cfg)`` picks the adapter whose library owns the config (its ``default_scope``, else its
model type); ``task_of(model)`` the one whose library built the model. A new task registers an
instance of a :class:`~cpd.mm.tasks.base.Task` subclass with :func:`register_task`; the callers
(``cpd comb/check``, export, ...) need no change.
"""

from __future__ import annotations

from mmengine.config import Config
from torch import nn

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

__all__ = ["TASKS", "Task", "register_task", "task_of"]
