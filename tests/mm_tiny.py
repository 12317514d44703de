"""A tiny pruning run for the mm tests: the embedded ViT scaled down (width 32, 2 layers, 40k parameters) on a
16-scene digit mosaic set, trained by ``cpd.mm.train.train`` with the PruningHook.  A run of 8 iterations
takes a few seconds on one CPU thread.

Also two helper hooks: :class:`ProbeHook` records the training model's outputs whenever the PruningHook has
just written a threshold file, and :class:`CrashHook` interrupts a run (as a kill would) at an iteration.
"""
from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import torch

import cpd.mm  # noqa: F401  (the mmcv shim before mmseg)
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from cpd.mm.pruning_hook import task_of_model
from cpd.mm.rebuild import prune_target
from cpd.mm.tasks.base import flat_tensors

ROOT = Path(__file__).resolve().parents[1]
PRUNE_CONFIG = ROOT / "configs" / "embedded" / "vit_digits_prune.py"
KD_CONFIG = ROOT / "configs" / "embedded" / "vit_digits_kd.py"

SMALL_VIT = {
    "model.backbone.embed_dims": 32, "model.backbone.num_layers": 2, "model.backbone.num_heads": 2,
    "model.decode_head.in_channels": 32, "model.decode_head.channels": 32,
}
#: what the hook does in the tiny runs: two pruning steps (iterations 2 and 4) reach both thresholds.
HOOK = dict(type="PruningHook", priority="LOWEST", interval=2, prune_cfg=None, save_sparsity_thr=[0.2, 0.4],
            step_fraction=0.2, round_to=4, continue_finetune=True)


def probe_batch() -> torch.Tensor:
    """A fixed, normalised batch of two 64x64 images."""
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(123))


def options(data: Path, max_iters: int = 8, hooks: list[dict] | None = None, **extra: Any) -> dict[str, Any]:
    """``--cfg-options`` of a tiny run on ``data`` (a digit mosaic layout)."""
    opts: dict[str, Any] = {
        "data_root": str(data), "max_iters": max_iters, "warmup_iters": 1, "val_interval": 4,
        **SMALL_VIT,
        "load_from": None,
        "train_dataloader.batch_size": 4, "val_dataloader.batch_size": 8, "test_dataloader.batch_size": 8,
        "default_hooks.logger.interval": 1, "default_hooks.checkpoint.interval": 1,
        "custom_hooks": hooks if hooks is not None else [dict(HOOK)],
        "visualizer.vis_backends": [], "experiment_name": f"tiny-{uuid.uuid4().hex[:8]}",
    }
    for split in ("train", "val", "test"):
        opts[f"{split}_dataloader.num_workers"] = 0
        opts[f"{split}_dataloader.persistent_workers"] = False
    opts.update(extra)
    return opts


def calibration_loader(data: Path) -> dict:
    """The config's val_dataloader on ``data``, batches of 4, shuffled (8 validation scenes: 2 batches an epoch)."""
    from mmengine.config import Config

    cfg = copy.deepcopy(Config.fromfile(str(PRUNE_CONFIG)).val_dataloader.to_dict())
    cfg["dataset"]["data_root"] = str(data)
    cfg.update(batch_size=4, num_workers=0, persistent_workers=False, sampler=dict(type="DefaultSampler",
                                                                                   shuffle=True))
    return cfg


def kd_options(data: Path, teacher: Path, max_iters: int = 8, hooks: list[dict] | None = None,
               **extra: Any) -> dict[str, Any]:
    """``--cfg-options`` of a tiny distillation run (``KD_CONFIG``) whose teacher and student start from ``teacher``."""
    opts = options(data, max_iters, hooks, **extra)
    for key in SMALL_VIT:
        opts[key.replace("model.", "model.student.", 1)] = opts.pop(key)
    opts.update({"model.teacher_checkpoint": str(teacher), "model.student_checkpoint": str(teacher)})
    return opts


def student_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Eval-mode outputs (its task's training forward, flattened: a detector's every kind and level) of the pruned
    (student) model on ``x``; the mode is restored."""
    net = prune_target(model)
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            outputs = task_of_model(net).train_forward(net, x.to(next(net.parameters()).device))
            return [o.detach().clone() for o in flat_tensors(outputs, "the training forward")]
    finally:
        net.train(was)


@HOOKS.register_module(force=True)
class ProbeHook(Hook):
    """After the PruningHook (same priority, registered later), record outputs when a threshold was saved."""

    priority = "LOWEST"
    records: dict[str, list[torch.Tensor]] = {}

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        """Store ``{file name: outputs}`` for each threshold file that appeared."""
        for path in sorted(Path(runner.work_dir).glob("thr_*.pth")):
            if path.name not in ProbeHook.records:
                ProbeHook.records[path.name] = student_outputs(runner.model, probe_batch())


class Interrupted(Exception):
    """Raised by :class:`CrashHook`."""


@HOOKS.register_module(force=True)
class CrashHook(Hook):
    """Stop a run with an exception before iteration ``at`` starts (the checkpoints of earlier ones exist)."""

    priority = "VERY_HIGH"

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Raise :class:`Interrupted` at iteration ``at``."""
        if runner.iter == self.at:
            raise Interrupted(f"interrupted before iteration {self.at}")
