"""A tiny classification run for the mm tests: the embedded digit-pair ResNet at an eighth of its width
(base 8 channels, 0.2M parameters) on 32 generated scenes, trained by ``cpd.mm.train.train``."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLS_CONFIG = ROOT / "configs" / "embedded" / "resnet_digit_pairs.py"

SMALL_RESNET = {"model.backbone.base_channels": 8, "model.head.in_channels": 64}
#: two pruning steps (iterations 2 and 4) reach both thresholds; then the cut model fine-tunes.
CLS_HOOK = dict(type="PruningHook", priority="LOWEST", interval=2, prune_cfg=None, save_sparsity_thr=[0.2, 0.4],
                step_fraction=0.2, round_to=4, continue_finetune=True)


def cls_options(data: Path, max_iters: int = 8, hooks: list[dict] | None = None, model: str = "model",
                **extra: Any) -> dict[str, Any]:
    """``--cfg-options`` of a tiny classification run on ``data`` (a digit-pair layout); ``model``: where the
    classifier's section is (``model.student`` for a distiller)."""
    opts: dict[str, Any] = {
        "data_root": str(data), "max_iters": max_iters, "warmup_iters": 1, "val_interval": 4,
        **{key.replace("model", model, 1): value for key, value in SMALL_RESNET.items()},
        "load_from": None,
        "train_dataloader.batch_size": 8, "val_dataloader.batch_size": 16, "test_dataloader.batch_size": 16,
        "default_hooks.logger.interval": 1, "default_hooks.checkpoint.interval": 1,
        "custom_hooks": hooks if hooks is not None else [dict(CLS_HOOK)],
        "visualizer.vis_backends": [], "experiment_name": f"tiny-cls-{uuid.uuid4().hex[:8]}",
    }
    for split in ("train", "val", "test"):
        opts[f"{split}_dataloader.num_workers"] = 0
        opts[f"{split}_dataloader.persistent_workers"] = False
    opts.update(extra)
    return opts
