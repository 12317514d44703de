"""The Distiller: a frozen teacher's KD loss added to the student's, usable while pruning (the student only)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg")
pytest.importorskip("sklearn")

from mm_tiny import HOOK, KD_CONFIG, PRUNE_CONFIG, SMALL_VIT, kd_options, probe_batch, student_outputs  # noqa: E402

from cpd.mm import build_model, load_config  # noqa: E402
from cpd.mm.checkpoints import load_checkpoint  # noqa: E402
from cpd.mm.distiller import Distiller  # noqa: E402
from cpd.mm.pruned import load_pruned_segmentor  # noqa: E402
from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.train import train  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpd.data.digit_mosaic import write_mmseg_layout

    return write_mmseg_layout(tmp_path_factory.mktemp("digits") / "mosaic", n_train=16, n_val=8, seed=0)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the tiny model (random weights stand in for a trained teacher)."""
    torch.manual_seed(0)
    model = build_model(load_config(PRUNE_CONFIG, SMALL_VIT))
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


def tiny_distiller(teacher: Path, **kwargs) -> Distiller:
    student = load_config(PRUNE_CONFIG, SMALL_VIT).model
    return Distiller(student=student, teacher=None, teacher_checkpoint=str(teacher), **kwargs)


def batch() -> dict:
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData

    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 11, (1, 64, 64), generator=gen))
        samples.append(s)
    return {"inputs": [torch.randint(0, 255, (3, 64, 64), generator=gen, dtype=torch.uint8) for _ in range(2)],
            "data_samples": samples}


def test_bad_arguments_are_refused(teacher: Path) -> None:
    for kwargs, match in [(dict(temperature=0), "temperature"), (dict(alpha=-1), "alpha"),
                          (dict(feature_loss=dict(wieght=1)), "feature_loss")]:
        with pytest.raises(ValueError, match=match):
            tiny_distiller(teacher, **kwargs)
    wrong = build_model(load_config(PRUNE_CONFIG, {**SMALL_VIT, "model.backbone.num_layers": 1}))
    path = teacher.parent / "wrong.pth"
    torch.save(wrong.state_dict(), path)
    with pytest.raises(ValueError, match="teacher_checkpoint=.*does not fit"):
        tiny_distiller(path)


def test_train_step_adds_kd_and_leaves_the_teacher_alone(teacher: Path) -> None:
    from mmengine.optim import OptimWrapper

    model = tiny_distiller(teacher, temperature=2.0, alpha=0.5, feature_loss=dict(weight=1.0, pool=4))
    model.init_weights()
    model.train()
    assert not model.teacher.training and all(not p.requires_grad for p in model.teacher.parameters())
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    saved = load_checkpoint(teacher)["state_dict"]
    assert all(torch.equal(before[k], v) for k, v in saved.items())

    wrapper = OptimWrapper(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2))
    log = model.train_step(batch(), wrapper)
    assert {"loss", "decode.loss_ce", "loss_kd", "loss_feat"} <= set(log)
    assert float(log["loss_kd"]) > 0
    assert all(torch.equal(before[k], v) for k, v in model.teacher.state_dict().items())
    # validation runs the student alone
    preds = model.val_step(batch())
    assert len(preds) == 2 and preds[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_kd_gradient_reaches_the_student(teacher: Path) -> None:
    model = tiny_distiller(teacher, alpha=1.0, temperature=2.0)
    model.train()
    data = model.data_preprocessor(batch(), True)
    model.loss(**data)["loss_kd"].backward()
    grads = [p.grad for p in model.student.backbone.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and max(float(g.abs().max()) for g in grads) > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_pruning_with_distillation_prunes_the_student_only(data: Path, teacher: Path, tmp_path: Path) -> None:
    runner = train(KD_CONFIG, tmp_path / "work", kd_options(data, teacher, max_iters=6, hooks=[dict(HOOK)]))
    model = runner.model
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    assert hook.materialized and hook.pruner.model is model.student
    teacher_state = load_checkpoint(teacher)["state_dict"]
    assert {k: v.shape for k, v in model.teacher.state_dict().items()} == {k: v.shape for k, v in teacher_state.items()}
    assert sum(p.numel() for p in model.student.parameters()) < sum(p.numel() for p in model.teacher.parameters())
    assert "train/loss_kd" in runner.message_hub.log_scalars
    # the threshold files hold the student alone, and load alone
    loaded = load_pruned_segmentor(tmp_path / "work" / "thr_0.4.pth")
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.student.parameters())
    best = load_pruned_segmentor(tmp_path / "work" / "best_pruned.pth")
    assert [p.shape for p in best.parameters()] == [p.shape for p in model.student.parameters()]
    outputs = student_outputs(best, probe_batch())
    assert [o.shape for o in outputs] == [(2, 11, 64, 64)]
