"""Pruning real mmseg segmentors at 64x64: the masked model computes what the cut model computes."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg")

from cpd.graph.forward import run_forward  # noqa: E402
from cpd.mm import build_model, example_inputs, load_config, seg_forward  # noqa: E402
from cpd.prune import PruneConfig, Pruner, load_pruned, save_pruned  # noqa: E402


pytestmark = [pytest.mark.mm, pytest.mark.usefixtures("one_thread")]

SIZE = (64, 64)
SEGFORMER = "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"
CONFIGS = {
    "vit": "vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py",
    "pspnet": "pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py",
    "ocrnet": "ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py",
    "segformer": SEGFORMER,  # last: the round trip below reuses its run
}


@functools.lru_cache(maxsize=1)
def prune_a_little(config: str) -> tuple[torch.nn.Module, Pruner, torch.Tensor]:
    """Two training iterations, each followed by a pruning step, with random images (the last run is kept)."""
    model = build_model(load_config(config), input_size=SIZE)
    x = example_inputs(model, size=SIZE)
    pruner = Pruner(model, (x,), PruneConfig(criterion="hessian", interval=1, thresholds=(0.2,), step_fraction=0.1),
                    forward_fn=seg_forward)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for it in range(2):
        images = torch.randn(x.shape, generator=torch.Generator().manual_seed(it))
        loss = sum(o.float().square().mean() for o in seg_forward(model, images))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        pruner.accumulate()
        opt.step()
        assert pruner.step() is not None
    return model, pruner, x


@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_masked_equals_materialized(config: str) -> None:
    model, pruner, x = prune_a_little(config)
    assert pruner.masks.removed() and pruner.sparsity == pytest.approx(0.2, abs=0.03)
    assert pruner.verify() <= 1e-5


def test_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    config = SEGFORMER
    _, pruner, x = prune_a_little(config)
    pruned, plan = pruner.export()
    save_pruned(pruned, plan, tmp_path / "segformer.pt")
    loaded = load_pruned(build_model(load_config(config), input_size=SIZE), tmp_path / "segformer.pt")
    for a, b in zip(run_forward(pruned, (x,), seg_forward), run_forward(loaded, (x,), seg_forward), strict=True):
        assert torch.equal(a, b)
