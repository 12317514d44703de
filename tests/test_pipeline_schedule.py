"""The learning rate the optimizer really uses in a run built by ``cpd.mm.recipe.with_schedule``.

A tiny real run (a 1-layer ViT of width 16 on 8 scenes) per schedule; mmengine's message hub keeps the
rate of every iteration (``train/lr``, recorded before the iteration's step).  Each case takes about two
seconds on one CPU thread.
"""
from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest

pytest.importorskip("mmseg")

import cpd.mm  # noqa: E402,F401  (the mmcv shim before mmseg)
from cpd.mm import load_config  # noqa: E402
from cpd.mm.recipe import with_data_root, with_loaders, with_schedule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.mm, pytest.mark.timeout(120)]
LR = 5e-4
TINY = {"model.backbone.embed_dims": 16, "model.backbone.num_layers": 1, "model.backbone.num_heads": 1,
        "model.decode_head.in_channels": 16, "model.decode_head.channels": 16}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpd.data.digit_mosaic import write_mmseg_layout

    return write_mmseg_layout(tmp_path_factory.mktemp("digits") / "mosaic", n_train=8, n_val=4, seed=0)


def used_lrs(data: Path, work: Path, max_iters: int, warmup_iters: int, decay: bool) -> list[float]:
    """Train a tiny model under the schedule; the learning rate of each iteration, as the optimizer had it."""
    from mmengine.runner import Runner

    cfg = load_config(ROOT / "configs" / "embedded" / "vit_digits.py", TINY)
    with_data_root(cfg, str(data))
    with_schedule(cfg, max_iters, max_iters + 1, LR, warmup_iters, decay)
    with_loaders(cfg, 2, 0)
    cfg.work_dir, cfg.experiment_name = str(work), f"lr-{uuid.uuid4().hex[:8]}"
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=-1)
    cfg.custom_hooks, cfg.visualizer.vis_backends, cfg.log_level = [], [], "WARNING"
    runner = Runner.from_cfg(cfg)
    runner.train()
    return [float(v) for v in runner.message_hub.get_scalar("train/lr").data[0]]


def expected(i: int, max_iters: int, warmup_iters: int, decay: bool) -> float:
    """The documented schedule: linear from a tenth of LR to LR at ``warmup_iters``, then cosine to 0 (or flat)."""
    if i < warmup_iters:
        return LR * (0.1 + 0.9 * i / warmup_iters)
    if not decay:
        return LR
    return LR * 0.5 * (1.0 + math.cos(math.pi * (i - warmup_iters) / (max_iters - warmup_iters)))


@pytest.mark.parametrize("max_iters, warmup_iters, decay", [
    (5, 0, True),    # no warm-up: the first iteration is at the peak
    (5, 1, True),    # the tests' value (mmengine's LinearLR with end=1 never handed over)
    (7, 3, True),
    (4, 0, False),   # prune's schedule: constant after the warm-up
    (4, 2, False),
])
def test_the_optimizer_trains_at_the_configured_peak(data: Path, tmp_path: Path, one_thread: None,
                                                     max_iters: int, warmup_iters: int, decay: bool) -> None:
    lrs = used_lrs(data, tmp_path, max_iters, warmup_iters, decay)
    assert len(lrs) == max_iters
    assert max(lrs) == pytest.approx(LR, rel=1e-9)
    assert lrs[warmup_iters] == pytest.approx(LR, rel=1e-9)  # the peak is reached when the warm-up ends
    assert lrs == pytest.approx([expected(i, max_iters, warmup_iters, decay) for i in range(max_iters)], rel=1e-6)
