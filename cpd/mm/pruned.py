"""Pruned OpenMMLab models on disk: loadable from the file alone, and buildable from a config.

A file written by :func:`save_pruned_model` is an ordinary :func:`cpd.prune.save_pruned`
checkpoint (the plan plus the pruned state dict, no pickled modules) whose plan summary also holds
the unpruned model's config as Python text (``summary["model_cfg"]``, with the library's
``default_scope`` when it was given) and the config's ``custom_imports``
(``summary["custom_imports"]``).  :func:`load_pruned_model` therefore needs nothing but the file:
it rebuilds the base model on CPU without downloading anything through the config's task
(:func:`cpd.mm.build_model`: a segmentor, a classifier, ...), replays the plan and loads the weights.

Configs reach a pruned model with ``model = dict(type='PrunedModel', checkpoint='thr_0.4.pth')``,
registered in the ``MODELS`` of every installed library when this module is imported (e.g. through
``custom_imports = dict(imports=['cpd.mm.pruned'])``); mmseg also knows it by its first name,
``PrunedSegmentor``.  Fine-tuning, distilling or testing a pruned checkpoint then works like any
other model.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from mmengine.config import Config, ConfigDict
from torch import nn

from cpd.mm.shim import install_mmcv_shim

install_mmcv_shim()

from mmseg.registry import MODELS  # noqa: E402

from cpd.mm.tasks import build_model  # noqa: E402
from cpd.prune import load_pruned, read_checkpoint, save_pruned  # noqa: E402

#: the ``type`` names a config may give a pruned-model file under (``PrunedSegmentor``: mmseg only)
PRUNED_TYPES = frozenset({"PrunedModel", "PrunedSegmentor"})


def model_cfg_text(model_cfg: Mapping[str, Any], scope: str | None = None,
                   input_size: Sequence[int] | None = None) -> str:
    """The model config as Python source (``model = dict(...)``), keeping tuples as tuples.

    Args:
        model_cfg: the model section.
        scope: the library's default scope (``'mmpretrain'``, ...); written beside the model so that
            loading finds the task without guessing it from the model type.
        input_size: the config's deployment ``(H, W)`` when the model section does not say it (a
            classifier's test crop); written as ``input_size`` so the rebuilt model keeps it.

    Returns:
        The config text.
    """
    data: dict[str, Any] = {"model": ConfigDict(model_cfg)}
    if scope:
        data["default_scope"] = scope
    if input_size is not None:
        data["input_size"] = (int(input_size[0]), int(input_size[1]))
    return Config(data).pretty_text


def save_pruned_model(model: nn.Module, plan: Mapping, path: str | os.PathLike,
                      model_cfg: Mapping[str, Any] | None = None, custom_imports: Sequence[str] = (),
                      scope: str | None = None, input_size: Sequence[int] | None = None) -> None:
    """Save a physically pruned model with its plan and, when given, its base model config.

    Args:
        model: the pruned model.
        plan: its plan (from ``Pruner.export()`` or ``materialize_()``).
        path: the file to write (atomically).
        model_cfg: the unpruned model's config section; stored so the file loads alone.
        custom_imports: modules to import before building the model (the config's ``custom_imports``).
        scope: the config's ``default_scope``, stored with ``model_cfg``.
        input_size: the config's deployment ``(H, W)`` (see :func:`model_cfg_text`), stored with ``model_cfg``.
    """
    plan = dict(plan)
    summary = dict(plan.get("summary", {}))
    if model_cfg is not None:
        summary["model_cfg"] = model_cfg_text(model_cfg, scope, input_size)
    summary["custom_imports"] = list(custom_imports)
    plan["summary"] = summary
    save_pruned(model, plan, path)


def is_pruned_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a pruned-model file (:func:`save_pruned_model`, the hook's ``thr_<x>.pth``)."""
    try:
        read_checkpoint(path)
    except Exception:  # noqa: BLE001 - anything else (an mmengine checkpoint, a broken file) is "no"
        return False
    return True


def load_pruned_model(path: str | os.PathLike, model_cfg: Mapping[str, Any] | None = None) -> nn.Module:
    """Rebuild the pruned model saved in ``path`` (CPU, nothing downloaded), whatever its task.

    Args:
        path: a file from :func:`save_pruned_model` (the pruning hook's ``thr_<x>.pth``).
        model_cfg: the unpruned model's config section; by default the one stored in the file.

    Returns:
        The pruned model with its weights, in train mode.

    Raises:
        ValueError: the file holds no model config and none is given, no task owns the config, or the
            plan or weights do not fit.
    """
    plan, state = read_checkpoint(path)
    summary = plan.get("summary", {})
    for module in summary.get("custom_imports", []):
        importlib.import_module(module)
    if model_cfg is None:
        text = summary.get("model_cfg")
        if not text:
            raise ValueError(f"{path} holds no model config; pass model_cfg (the unpruned model's config section)")
        cfg = Config.fromstring(text, file_format=".py")
    else:
        cfg = Config(dict(model=ConfigDict(model_cfg)))
    base = build_model(cfg)
    return load_pruned(base, plan, state)


#: the first names, kept for the callers of the segmentation-only module
save_pruned_segmentor = save_pruned_model
load_pruned_segmentor = load_pruned_model


def pruned_model(checkpoint: str, model: Mapping[str, Any] | None = None, data_preprocessor: Any = None
                 ) -> nn.Module:
    """Build the pruned model of ``checkpoint`` (a ``MODELS`` entry: ``type='PrunedModel'``).

    The model is marked initialised, so the runner's ``init_weights()`` keeps the loaded weights.

    Args:
        checkpoint: a file from :func:`save_pruned_model`.
        model: the unpruned model's config section, when the file holds none.
        data_preprocessor: ignored (the runner passes the config's top-level one): the pruned model keeps
            the preprocessor of its own config.

    Returns:
        The pruned model.
    """
    built = load_pruned_model(checkpoint, model)
    built._is_init = True
    return built


def _register() -> None:
    """Put :func:`pruned_model` in the ``MODELS`` of mmseg (under both names) and of mmpretrain and mmdet if installed."""
    MODELS.register_module(name="PrunedSegmentor", module=pruned_model)
    MODELS.register_module(name="PrunedModel", module=pruned_model)
    for library in ("mmpretrain", "mmdet"):  # optional: segmentation alone needs neither
        try:
            registry = importlib.import_module(f"{library}.registry").MODELS
        except ModuleNotFoundError:
            continue
        registry.register_module(name="PrunedModel", module=pruned_model)


_register()
