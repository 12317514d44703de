"""A tiny detection run for the mm tests: the embedded digit-box RetinaNet (0.26M parameters) on 32 generated
scenes, trained by ``cpd.mm.train.train``; 8 iterations take a few seconds on one thread."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DET_CONFIG = ROOT / "configs" / "embedded" / "retinanet_digit_boxes.py"

#: two pruning steps (iterations 2 and 4) reach both thresholds; then the cut model fine-tunes.
DET_HOOK = dict(type="PruningHook", priority="LOWEST", interval=2, prune_cfg=None, save_sparsity_thr=[0.2, 0.4],
                step_fraction=0.2, round_to=4, continue_finetune=True)


def det_options(data: Path, max_iters: int = 8, hooks: list[dict] | None = None, **extra: Any) -> dict[str, Any]:
    """``--cfg-options`` of a tiny detection run on ``data`` (a digit-box layout)."""
    opts: dict[str, Any] = {
        "data_root": str(data), "max_iters": max_iters, "warmup_iters": 1, "checkpoint_interval": 1,
        "load_from": None, "train_dataloader.batch_size": 4,
        "train_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
        "default_hooks.logger.interval": 1,
        "custom_hooks": hooks if hooks is not None else [dict(DET_HOOK)],
        "visualizer.vis_backends": [], "experiment_name": f"tiny-det-{uuid.uuid4().hex[:8]}",
    }
    opts.update(extra)
    return opts
