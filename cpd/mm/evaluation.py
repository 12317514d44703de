"""Models of the pipeline on disk, and what the evaluate stage measures of them.

The baseline is stored as ``{"state_dict": ..., "meta": ...}`` (plain tensors, readable with
``weights_only=True``) next to the config it was trained with; pruned and distilled students as
:func:`cpd.mm.pruned.save_pruned_segmentor` files (plan + weights + base config).
"""
from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from torch import nn

from cpd.flops import count_macs, count_params
from cpd.mm.build import build_model, example_inputs
from cpd.mm.entry import seg_forward
from cpd.mm.pruned import load_pruned_segmentor
from cpd.mm.recipe import with_imports, with_loaders
from cpd.mm.train import full_checkpoint_loading
from cpd.prune import read_checkpoint, save_pruned

#: mmseg's IoUMetric reports these in percent; the pipeline records fractions in [0, 1].
SEG_METRICS = ("mIoU", "aAcc", "mAcc")


def checkpoint_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The model weights of an mmengine checkpoint or a plain state dict (a DDP ``module.`` prefix dropped).

    mmengine checkpoints hold more than tensors, so the file is unpickled in full: use your own files.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no state dict.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def save_baseline(cfg: Config, checkpoint: str | os.PathLike[str], out: str | os.PathLike[str],
                  meta: Mapping[str, Any] | None = None) -> nn.Module:
    """Check that ``checkpoint``'s weights fit ``cfg``'s model and store them alone as ``out``.

    Returns:
        The model with the weights loaded.

    Raises:
        ValueError: the weights do not fit the model (names a few keys).
    """
    state = checkpoint_weights(checkpoint)
    model = build_model(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{os.fspath(checkpoint)!r} does not fit the model of the config: "
                         f"{' '.join(str(e).split())[:400]}") from None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "meta": dict(meta or {})}, out)
    return model


def load_baseline(cfg: Config, path: str | os.PathLike[str]) -> nn.Module:
    """The baseline model of ``cfg`` with the weights of a :func:`save_baseline` file, in eval mode."""
    model = build_model(cfg)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"], strict=True)
    return model.eval()


def load_student(path: str | os.PathLike[str]) -> nn.Module:
    """A pruned (or distilled) model from its file, in eval mode."""
    return load_pruned_segmentor(path).eval()


def save_student(distiller_checkpoint: str | os.PathLike[str], pruned: str | os.PathLike[str],
                 out: str | os.PathLike[str]) -> nn.Module:
    """Store the student of a Distiller checkpoint as a pruned-model file with the plan of ``pruned``.

    Raises:
        ValueError: the checkpoint holds no student weights fitting the pruned model.
    """
    state = checkpoint_weights(distiller_checkpoint)
    student = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    if not student:
        raise ValueError(f"{os.fspath(distiller_checkpoint)!r} holds no 'student.' weights")
    model = load_pruned_segmentor(pruned)
    model.load_state_dict(student, strict=True)
    plan, _ = read_checkpoint(pruned)
    save_pruned(model, plan, out)
    return model


def model_cost(model: nn.Module) -> dict[str, int]:
    """Parameters and MACs (one eval forward of one image at the data preprocessor's size)."""
    inputs = example_inputs(model, batch=1)
    return {"params": count_params(model), "flops": int(count_macs(model, (inputs,), forward_fn=seg_forward))}


def test_model(base: Config, model_cfg: Mapping[str, Any], work_dir: str | os.PathLike[str],
               load_from: str | os.PathLike[str] | None = None, batch_size: int | None = None,
               workers: int | None = None) -> dict[str, float]:
    """Run the config's test loop on a model and return mIoU, aAcc and mAcc as fractions.

    Args:
        base: the trained config (data, pipeline, evaluator).
        model_cfg: the model to test: ``base.model``, or ``dict(type='PrunedSegmentor', checkpoint=...)``.
        work_dir: where mmengine writes its log.
        load_from: weights loaded into the model (the baseline's), or None.
        batch_size, workers: of the test loader (None: the config's).
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
    runner = Runner.from_cfg(cfg)
    with full_checkpoint_loading():
        metrics = runner.test()
    return {k: round(float(metrics[k]) / 100.0, 6) for k in SEG_METRICS if k in metrics}
