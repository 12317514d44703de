"""Models of the pipeline on disk, and what the evaluate stage measures of them.

The baseline is stored as ``{"state_dict": ..., "meta": ...}`` (plain tensors, readable with
``weights_only=True``) next to the config it was trained with; pruned and distilled students as
:func:`cpd.mm.pruned.save_pruned_model` files (plan + weights + base config).
"""
from __future__ import annotations

import copy
import hashlib
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from torch import nn

from cpd.flops import count_macs, count_params
from cpd.mm.tasks import build_model, example_inputs, pruned_type, task_name  # noqa: F401 (stages use them)
from cpd.mm.pruned import load_pruned_model
from cpd.mm.checkpoints import safe_checkpoint_loading, state_dict_of, state_mismatch, trusted_in
from cpd.mm.recipe import with_imports, with_loaders
from cpd.mm.train import check_run_inputs
from cpd.prune import read_checkpoint, save_pruned
from cpd.safe_load import NOT_FROM_CPD, load_torch, save_torch

#: mmseg's IoUMetric reports these in percent; the pipeline records fractions in [0, 1].
SEG_METRICS = ("mIoU", "aAcc", "mAcc")
#: per task, the test loop's metrics (in percent) -> the names the pipeline records them under (as
#: fractions); the first is the task's main metric, the one the summary and ``dvc exp show`` compare.
TASK_METRICS = {"segmentation": {k: k for k in SEG_METRICS},
                "classification": {"accuracy/top1": "top1", "accuracy/top5": "top5"}}


def main_metric(cfg: Config) -> str:
    """The pipeline's name of the main metric of ``cfg``'s task (``mIoU``, ``top1``).

    Raises:
        ValueError: the pipeline measures no metric of this task yet.
    """
    name = task_name(cfg)
    if name not in TASK_METRICS:
        raise ValueError(f"the pipeline evaluates {sorted(TASK_METRICS)} models; this config is a {name} config")
    return next(iter(TASK_METRICS[name].values()))


def checkpoint_weights(path: str | os.PathLike[str], trusted: bool = False) -> dict[str, torch.Tensor]:
    """The model weights of an mmengine checkpoint or a plain state dict (a DDP ``module.`` prefix dropped).

    Read weights-only with the allowlist of :mod:`cpd.mm.checkpoints`: no code of the file runs.

    Args:
        path: the file.
        trusted: the user vouches for this file: read it in full (it may then run code).

    Raises:
        FileNotFoundError: no such file.
        cpd.safe_load.BadFileError: damaged, refused, or holding no state dict (a ValueError).
    """
    return state_dict_of(path, "checkpoint", [path] if trusted else ())


def save_baseline(cfg: Config, checkpoint: str | os.PathLike[str], out: str | os.PathLike[str],
                  meta: Mapping[str, Any] | None = None) -> nn.Module:
    """Check that ``checkpoint``'s weights fit ``cfg``'s model and store them alone as ``out``.

    ``out`` depends only on the weights and ``meta``: give ``meta`` no absolute path (the train stage
    stores the checkpoint's path relative to the repository), so the same weights give the same bytes
    in any checkout.

    Args:
        cfg: the config whose model the weights must fit; its ``trusted_checkpoints`` list may name
            ``checkpoint`` to have it read in full.
        checkpoint: an mmengine checkpoint or a state dict, read weights-only.
        out: the baseline file to write (atomically).
        meta: plain data stored beside the weights.

    Returns:
        The model with the weights loaded.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: the checkpoint is damaged or refused, or its weights do not fit the model (names a few keys).
    """
    state = state_dict_of(checkpoint, "checkpoint", trusted_in(cfg))
    model = build_model(cfg)
    problem = state_mismatch(model, state)
    if problem:
        raise ValueError(f"checkpoint {os.fspath(checkpoint)!r} does not fit the model of the config: {problem}; "
                         "expected a checkpoint of this config's model")
    model.load_state_dict(state, strict=True)
    save_torch({"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "meta": dict(meta or {})}, out)
    return model


def checkpoint_source(path: str | os.PathLike[str], root: str | os.PathLike[str] = ".") -> str:
    """What a baseline records as its source checkpoint, the same in every checkout.

    Returns:
        The path relative to ``root`` (POSIX) when the file lies under it; else ``sha256:<hex>`` of the
        file's bytes (an absolute path would differ between machines).
    """
    p, base = Path(path).resolve(), Path(root).resolve()
    if p.is_relative_to(base):
        return p.relative_to(base).as_posix()
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def load_baseline(cfg: Config, path: str | os.PathLike[str]) -> nn.Module:
    """The baseline model of ``cfg`` with the weights of a :func:`save_baseline` file, in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is damaged, not a baseline file, or its weights do not fit the model.
    """
    from cpd.safe_load import BadFileError

    ckpt = load_torch(path, "baseline", opt_in=NOT_FROM_CPD)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise BadFileError(f"baseline {os.fspath(path)!r} holds no 'state_dict'; expected a file of the train stage")
    model = build_model(cfg)
    problem = state_mismatch(model, ckpt["state_dict"])
    if problem:
        raise BadFileError(f"baseline {os.fspath(path)!r} does not fit the model of the config: {problem}")
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval()


def load_student(path: str | os.PathLike[str]) -> nn.Module:
    """A pruned (or distilled) model from its file, in eval mode."""
    return load_pruned_model(path).eval()


def save_student(distiller_checkpoint: str | os.PathLike[str], pruned: str | os.PathLike[str],
                 out: str | os.PathLike[str]) -> nn.Module:
    """Store the student of a Distiller checkpoint as a pruned-model file with the plan of ``pruned``.

    Raises:
        ValueError: the checkpoint holds no student weights fitting the pruned model.
    """
    state = state_dict_of(distiller_checkpoint, "distiller checkpoint")
    student = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    if not student:
        raise ValueError(f"{os.fspath(distiller_checkpoint)!r} holds no 'student.' weights")
    model = load_pruned_model(pruned)
    model.load_state_dict(student, strict=True)
    plan, _ = read_checkpoint(pruned)
    save_pruned(model, plan, out)
    return model


#: which graph :func:`model_cost`'s FLOPs count (written beside them in the evaluate and export metrics)
FLOPS_GRAPH = "inference"


def model_cost(model: nn.Module) -> dict[str, int]:
    """Parameters and MACs of one image at the model's deployment size (:meth:`cpd.mm.tasks.Task.default_size`)
    through the forward inference runs, the task's ``infer_forward``: the graph export writes and latency times,
    without training-only heads (a segmentor's auxiliary heads). Parameters count every weight the model holds."""
    from cpd.mm.pruning_hook import task_of_model

    inputs = example_inputs(model, batch=1)
    forward = task_of_model(model).infer_forward
    return {"params": count_params(model), "flops": int(count_macs(model, (inputs,), forward_fn=forward))}


def test_model(base: Config, model_cfg: Mapping[str, Any], work_dir: str | os.PathLike[str],
               load_from: str | os.PathLike[str] | None = None, batch_size: int | None = None,
               workers: int | None = None) -> dict[str, float]:
    """Run the config's test loop on a model and return its task's metrics as fractions.

    Args:
        base: the trained config (data, pipeline, evaluator).
        model_cfg: the model to test: ``base.model``, or ``dict(type=pruned_type(base), checkpoint=...)``.
        work_dir: where mmengine writes its log.
        load_from: weights loaded into the model (the baseline's), or None.
        batch_size, workers: of the test loader (None: the config's).

    Returns:
        The metrics of :data:`TASK_METRICS` for the config's task (``mIoU``, ``aAcc``, ``mAcc``; ``top1``,
        ``top5``).

    Raises:
        FileNotFoundError, cpd.safe_load.BadFileError: ``load_from`` or the model's checkpoint is missing,
            damaged or refused (before the Runner is built).
    """
    from mmengine.runner import Runner

    cfg = copy.deepcopy(base)
    cfg.model = copy.deepcopy(dict(model_cfg))
    with_imports(cfg, ["cpd.mm.pruned"])
    if batch_size is not None:
        cfg.test_dataloader.batch_size = batch_size
    with_loaders(cfg, None, workers, loaders=("test_dataloader",))
    cfg.custom_hooks = []
    cfg.work_dir = os.fspath(work_dir)
    cfg.load_from = None if load_from is None else os.fspath(load_from)
    cfg.resume = False
    cfg.experiment_name = f"test-{uuid.uuid4().hex[:8]}"
    check_run_inputs(cfg, trusted_in(cfg))
    with safe_checkpoint_loading(trusted_in(cfg)):
        runner = Runner.from_cfg(cfg)
        metrics = runner.test()
    names = TASK_METRICS.get(task_name(base), {})
    return {name: round(float(metrics[k]) / 100.0, 6) for k, name in names.items() if k in metrics}
