"""The Distiller on an mmdet detector: KD on the head's class scores and boxes of every level and on the neck."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("sklearn")

from det_tiny import DET_CONFIG  # noqa: E402

from cpd.distill import dense_cls_kd_loss  # noqa: E402
from cpd.mm import build_model, load_config  # noqa: E402
from cpd.mm.distiller import Distiller  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(120), pytest.mark.usefixtures("one_thread")]

KD_TERMS = ("loss_kd", "loss_kd_box", "loss_kd_neck")
#: a student whose neck is narrower than the teacher's (as after pruning the FPN's outputs)
NARROW = {"model.neck.out_channels": 24, "model.bbox_head.in_channels": 24}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the detector with PyTorch's default initialisation (random weights stand in for a trained
    teacher; mmdet's own initialisation scores every prior near 0.01, far from what a trained head gives)."""
    torch.manual_seed(0)
    model = build_model(load_config(DET_CONFIG))
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, list]:
    """Four generated scenes with their boxes, through the detector's data preprocessor."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from cpd.data.digit_boxes import make_detection_scenes

    images, boxes, classes = make_detection_scenes(4, "train", 0)
    samples = []
    for b, c in zip(boxes, classes):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.from_numpy(b), labels=torch.from_numpy(c))
        samples.append(sample)
    preprocessor = build_model(load_config(DET_CONFIG)).data_preprocessor
    data = preprocessor(dict(inputs=[torch.from_numpy(i).permute(2, 0, 1) for i in images], data_samples=samples),
                        training=True)
    return data["inputs"], data["data_samples"]


def distiller(teacher: Path, student_options: dict | None = None, **kwargs) -> Distiller:
    torch.manual_seed(1)  # the student starts from other weights than the teacher
    model = Distiller(student=load_config(DET_CONFIG, student_options).model,
                      teacher=dict(load_config(DET_CONFIG).model), teacher_checkpoint=str(teacher), **kwargs)
    model.init_weights()
    return model


def test_kd_on_every_level_beside_the_detectors_own_losses(teacher: Path, batch: tuple) -> None:
    inputs, samples = batch
    model = distiller(teacher, temperature=2.0, alpha=0.5, detection_kd=dict(neck_weight=1.0, conf_thr=0.0))
    model.train()
    assert model.task.name == "detection" and not model.teacher.training
    losses = model.loss(inputs, samples)
    assert set(losses) == {"loss_cls", "loss_bbox", *KD_TERMS}
    assert all(torch.isfinite(v).all() for k, v in losses.items() if k in KD_TERMS)

    # the student's own losses are what mmdet's head computes; the class term is the binary KL at T, per level
    student, teacher_net = model.student, model.teacher
    own = student.bbox_head.loss(student.extract_feat(inputs), samples)
    for key in ("loss_cls", "loss_bbox"):
        for a, b in zip(losses[key], own[key], strict=True):
            torch.testing.assert_close(a, b)
    with torch.no_grad():
        s_cls = student.bbox_head(student.extract_feat(inputs))[0]
        t_cls = teacher_net.bbox_head(teacher_net.extract_feat(inputs))[0]
    expected = torch.stack([dense_cls_kd_loss(s, t, 2.0, num_priors=3) for s, t in zip(s_cls, t_cls)]).mean()
    torch.testing.assert_close(losses["loss_kd"], 0.5 * expected)
    assert all(float(losses[k]) > 0 for k in KD_TERMS)

    # backward: the student and the connectors learn, the teacher does not
    sum(losses[k] for k in KD_TERMS).backward()
    assert all(p.grad is None for p in teacher_net.parameters())
    assert student.bbox_head.retina_cls.weight.grad.abs().sum() > 0
    assert all(c.weight.grad.abs().sum() > 0 for c in model.connectors)


def test_kd_is_zero_when_the_student_is_the_teacher(teacher: Path, batch: tuple) -> None:
    inputs, samples = batch
    twin = distiller(teacher, student_checkpoint=str(teacher), detection_kd=dict(neck_weight=1.0, conf_thr=0.0))
    twin.eval()  # the same normalisation on both sides (the teacher is always in eval mode)
    losses = twin.loss(inputs, samples)
    assert all(float(losses[k]) < 1e-6 for k in KD_TERMS), {k: float(losses[k]) for k in KD_TERMS}
    # and it is not zero merely because nothing counts: another student on the same settings is far from it
    other = distiller(teacher, detection_kd=dict(neck_weight=1.0, conf_thr=0.0)).eval()
    far = other.loss(inputs, samples)
    assert all(float(far[k]) > 1e-3 for k in KD_TERMS), {k: float(far[k]) for k in KD_TERMS}


def test_the_box_term_counts_only_the_teachers_confident_priors(teacher: Path, batch: tuple) -> None:
    inputs, samples = batch
    plain = distiller(teacher, detection_kd=dict(box="l2")).loss(inputs, samples)["loss_kd_box"]
    every = distiller(teacher, detection_kd=dict(conf_thr=0.0)).loss(inputs, samples)["loss_kd_box"]
    none = distiller(teacher, detection_kd=dict(conf_thr=1.0)).loss(inputs, samples)["loss_kd_box"]
    torch.testing.assert_close(every, plain)  # every prior is confident at 0
    assert float(none) == 0.0 < float(plain)  # no sigmoid reaches 1
    off = distiller(teacher, detection_kd=dict(box=None)).loss(inputs, samples)
    assert "loss_kd_box" not in off and "loss_kd_neck" not in off


def test_a_few_steps_on_the_kd_terms_close_the_gap(teacher: Path, batch: tuple) -> None:
    inputs, samples = batch
    model = distiller(teacher, detection_kd=dict(neck_weight=1.0, conf_thr=0.0))
    model.train()  # batch statistics: the running ones of an untrained student would say nothing
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-3)

    def gap() -> torch.Tensor:
        losses = model.loss(inputs, samples)
        return sum(losses[k] for k in KD_TERMS)

    with torch.no_grad():
        before = float(gap())
    for _ in range(10):
        optimizer.zero_grad()
        gap().backward()
        optimizer.step()
    with torch.no_grad():
        after = float(gap())
    assert after < 0.5 * before, (before, after)


def test_a_narrower_neck_is_compared_through_its_connectors(teacher: Path, batch: tuple) -> None:
    inputs, samples = batch
    model = distiller(teacher, NARROW, detection_kd=dict(neck_weight=1.0))
    assert [(c.in_channels, c.out_channels) for c in model.connectors] == [(24, 32)] * 3
    losses = model.loss(inputs, samples)
    losses["loss_kd_neck"].backward()
    assert all(c.weight.grad.abs().sum() > 0 for c in model.connectors)
    # connectors built for one width refuse a student cut to another afterwards, saying what to do
    wide = distiller(teacher, detection_kd=dict(neck_weight=1.0))
    wide.student = model.student
    with pytest.raises(ValueError, match="has 24 channels, its connector takes 32"):
        wide.loss(inputs, samples)


@pytest.mark.parametrize("bad,match", [
    (dict(cls="mse"), r"detection_kd.cls='mse' must be one of"),
    (dict(box="smooth_l1"), r"detection_kd.box='smooth_l1' must be one of"),
    (dict(conf_thr=1.5), r"conf_thr=1.5 must be a probability"),
    (dict(neck_weight=-1), r"neck_weight=-1 must be a number >= 0"),
    (dict(weight=1.0), r"must be None or a dict with keys"),
])
def test_bad_detection_kd_options_are_refused(teacher: Path, bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        distiller(teacher, detection_kd=bad)
