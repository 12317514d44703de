"""The original example config (DeiT-S/16 + UperNet on ADE20K with the PruningHook) trains a few iterations on CPU
over a tiny generated folder in ADE20K's layout, with the dependency JSON made by `cpd comb`, and prunes."""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmseg")
PIL = pytest.importorskip("PIL.Image")

from cpd.cli import main as cpd_main  # noqa: E402
from cpd.mm import load_config  # noqa: E402
from cpd.mm.pruned import load_pruned_segmentor  # noqa: E402
from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.train import train  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "ade20k" / "deit-s16_upernet_8xb2-80k_ade20k-512x512_prune.py"


def write_ade20k_layout(root: Path, n: int = 3, size: tuple[int, int] = (72, 96)) -> Path:
    """``images/{training,validation}/*.jpg`` and ``annotations/...png`` (labels 0..150, 0 = ignored)."""
    rng = np.random.default_rng(0)
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            PIL.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "images" / split / f"{i}.jpg")
            labels = np.repeat(rng.integers(0, 151, (size[0] // 8, size[1] // 8)), 8, axis=0).repeat(8, axis=1)
            PIL.fromarray(labels.astype(np.uint8)).save(root / "annotations" / split / f"{i}.png")
    return root


def test_config_is_the_original_example() -> None:
    cfg = load_config(CONFIG)
    assert cfg.model.backbone.embed_dims == 384 and cfg.model.backbone.num_heads == 6
    assert cfg.model.decode_head.type == "UPerHead" and cfg.train_dataloader.dataset.type == "ADE20KDataset"
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.train_cfg.max_iters == 80000
    assert cfg.custom_hooks == [dict(type="PruningHook", priority="LOWEST", interval=50, prune_cfg="deps.json",
                                     save_sparsity_thr=[0.4], continue_finetune=True)]
    assert cfg.custom_imports.imports == ["cpd.mm.pruning_hook"]


def test_a_few_iterations_prune_on_cpu(tmp_path: Path) -> None:
    data = write_ade20k_layout(tmp_path / "ADEChallengeData2016")
    deps = tmp_path / "deps.json"
    assert cpd_main(["comb", str(CONFIG), "--size", "64", "64", "--out", str(deps)]) == 0
    options = {
        "data_root": str(data), "crop_size": (64, 64), "max_iters": 2, "warmup_iters": 1,
        "model.pretrained": None, "val_dataloader.dataset.pipeline.1.scale": (96, 64),
        "train_dataloader.batch_size": 2, "train_dataloader.num_workers": 0,
        "train_dataloader.persistent_workers": False,
        "custom_hooks.0.prune_cfg": str(deps), "custom_hooks.0.interval": 1, "custom_hooks.0.step_fraction": 0.4,
        "visualizer.vis_backends": [], "experiment_name": f"ade-{uuid.uuid4().hex[:8]}",
    }
    runner = train(CONFIG, tmp_path / "work", options)
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    assert runner.iter == 2 and len(hook.pruner.history) == 1
    assert hook.saved == [0.4] and hook.materialized  # pruned and cut at iteration 1, the cut model trained at 2
    model = load_pruned_segmentor(tmp_path / "work" / "thr_0.4.pth")
    assert sum(p.numel() for p in model.parameters()) < 0.62 * hook.pruner.original
