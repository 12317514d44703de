"""Pruned segmentor files: they load from the file alone, build from a config (PrunedSegmentor) without being
re-initialised, and tools/test.py evaluates them like any checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg")
pytest.importorskip("sklearn")

from mm_tiny import PRUNE_CONFIG, SMALL_VIT, probe_batch, student_outputs  # noqa: E402

from cpd.mm import build_model, load_config, seg_forward  # noqa: E402
from cpd.mm.pruned import is_pruned_file, load_pruned_segmentor, save_pruned_segmentor  # noqa: E402
from cpd.mm.train import evaluate  # noqa: E402
from cpd.prune import PruneConfig, Pruner  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(120)]
TINY_DATA = {"val_dataloader.batch_size": 8, "test_dataloader.batch_size": 8, "test_dataloader.num_workers": 0,
             "test_dataloader.persistent_workers": False, "visualizer.vis_backends": []}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A tiny model with 30 % of its parameters pruned (magnitude), saved with its config."""
    cfg = load_config(PRUNE_CONFIG, SMALL_VIT)
    model = build_model(cfg)
    pruner = Pruner(model, (torch.randn(2, 3, 64, 64),), PruneConfig(criterion="magnitude", thresholds=(0.3,),
                                                                      step_fraction=0.3, round_to=4),
                    forward_fn=seg_forward)
    pruner.prune_step()
    cut, plan = pruner.export()
    path = tmp_path_factory.mktemp("pruned") / "thr_0.3.pth"
    save_pruned_segmentor(cut, plan, path, model_cfg=cfg.model, custom_imports=cfg.custom_imports.imports)
    return path, cut


def test_the_file_loads_alone(pruned: tuple[Path, torch.nn.Module]) -> None:
    path, cut = pruned
    loaded = load_pruned_segmentor(path)
    assert [p.shape for p in loaded.parameters()] == [p.shape for p in cut.parameters()]
    for a, b in zip(student_outputs(loaded, probe_batch()), student_outputs(cut, probe_batch()), strict=True):
        assert torch.equal(a, b)
    assert is_pruned_file(path)


def test_a_file_without_its_config_needs_one(pruned: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, cut = pruned
    from cpd.prune import read_checkpoint, save_pruned

    plan, _ = read_checkpoint(path)
    plan["summary"].pop("model_cfg")
    bare = tmp_path / "bare.pth"
    save_pruned(cut, plan, bare)
    with pytest.raises(ValueError, match="holds no model config"):
        load_pruned_segmentor(bare)
    loaded = load_pruned_segmentor(bare, load_config(PRUNE_CONFIG, SMALL_VIT).model)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in cut.parameters())
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": cut.state_dict()}, plain)
    assert not is_pruned_file(plain) and not is_pruned_file(tmp_path / "missing.pth")


def test_pruned_segmentor_keeps_its_weights_through_init_weights(pruned: tuple[Path, torch.nn.Module]) -> None:
    from mmseg.registry import MODELS

    path, cut = pruned
    model = MODELS.build(dict(type="PrunedSegmentor", checkpoint=str(path), data_preprocessor=dict(type="x")))
    model.init_weights()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cut.state_dict().values()))


def test_tools_test_evaluates_a_pruned_file(pruned: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    from cpd.data.digit_mosaic import write_mmseg_layout

    data = write_mmseg_layout(tmp_path / "digits", n_train=4, n_val=8, seed=0)
    path, _ = pruned
    metrics = evaluate(PRUNE_CONFIG, path, tmp_path / "eval", {"data_root": str(data), **TINY_DATA})
    assert {"mIoU", "aAcc", "mAcc"} <= set(metrics)
