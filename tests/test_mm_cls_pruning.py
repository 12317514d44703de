"""The PruningHook, the pruned-model files and the Distiller on an mmpretrain classifier (generated digit pairs)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmpretrain")
pytest.importorskip("sklearn")

from cls_tiny import CLS_CONFIG, CLS_HOOK, SMALL_RESNET, cls_options  # noqa: E402
from mm_tiny import ProbeHook, probe_batch, student_outputs  # noqa: E402

from cpd.distill import kd_kl_loss  # noqa: E402
from cpd.mm import build_model, load_config  # noqa: E402
from cpd.mm.distiller import Distiller  # noqa: E402
from cpd.mm.pruned import load_pruned_model  # noqa: E402
from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.tasks import task_of  # noqa: E402
from cpd.mm.train import evaluate, train  # noqa: E402
from cpd.prune import read_checkpoint  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(180), pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpd.data.digit_pairs import write_mmpretrain_layout

    return write_mmpretrain_layout(tmp_path_factory.mktemp("sums") / "sums", n_train=32, n_val=16, seed=0)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the tiny classifier (random weights stand in for a trained teacher)."""
    torch.manual_seed(0)
    model = build_model(load_config(CLS_CONFIG, SMALL_RESNET))
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


def test_the_hook_prunes_a_classifier_and_each_threshold_loads_alone(data: Path, tmp_path: Path) -> None:
    from mmpretrain.registry import MODELS

    ProbeHook.records = {}
    runner = train(CLS_CONFIG, tmp_path / "work", cls_options(data, hooks=[dict(CLS_HOOK), dict(type="ProbeHook")]))
    work = tmp_path / "work"
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    assert hook.task.name == "classification"
    assert [e.iteration for e in hook.pruner.history] == [2, 4]
    assert hook.saved == [0.2, 0.4] and hook.materialized

    assert sorted(ProbeHook.records) == ["thr_0.2.pth", "thr_0.4.pth"]
    sizes = []
    for name, expected in ProbeHook.records.items():
        plan, _ = read_checkpoint(work / name)
        assert plan["summary"]["sparsity"] >= float(name[4:-4])
        loaded = load_pruned_model(work / name)
        assert task_of(loaded).name == "classification"
        sizes.append(sum(p.numel() for p in loaded.parameters()))
        got = student_outputs(loaded, probe_batch())
        assert [tuple(o.shape) for o in got] == [(2, 10)]
        for a, b in zip(got, expected, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (name, float((a - b).abs().max()))
    assert sizes[0] > sizes[1]
    assert runner.iter == 8 and sum(p.numel() for p in runner.model.parameters()) == sizes[1]

    # the best pruned model is picked by the classifier's main metric, and loads alone through mmpretrain's MODELS
    # (validations at iterations 4 and 8; a tie keeps the first)
    assert hook.best["metric"] == "accuracy/top1" and hook.best["iter"] in (4, 8)
    best = MODELS.build(dict(type="PrunedModel", checkpoint=str(work / "best_pruned.pth")))
    assert sum(p.numel() for p in best.parameters()) == sizes[1]
    # tools/test.py's evaluate() tests a pruned file of a classifier in place of the config's model
    scores = evaluate(CLS_CONFIG, work / "thr_0.4.pth", tmp_path / "test", cls_options(data, hooks=[]))
    assert 0.0 <= scores["accuracy/top1"] <= scores["accuracy/top5"] <= 100.0
    if hook.best["iter"] == 8:
        for a, b in zip(student_outputs(best, probe_batch()), student_outputs(runner.model, probe_batch()),
                        strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def tiny_distiller(teacher: Path, **kwargs) -> Distiller:
    student = load_config(CLS_CONFIG, SMALL_RESNET).model
    return Distiller(student=student, teacher=None, teacher_checkpoint=str(teacher), **kwargs)


def test_kd_on_class_logits_beside_the_students_own_loss(teacher: Path, data: Path) -> None:
    from mmpretrain.structures import DataSample

    model = tiny_distiller(teacher, temperature=2.0, alpha=0.5)
    model.init_weights()
    model.train()
    assert model.task.name == "classification" and not model.teacher.training
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 3, 32, 32, generator=gen)
    samples = [DataSample().set_gt_label(int(k)) for k in torch.randint(0, 10, (4,), generator=gen)]
    losses = model.loss(inputs, samples)
    assert set(losses) == {"loss", "loss_kd"}

    # the KD term is KL at T on the class scores of the two networks; the student's loss is its head's own
    student, teacher_net = model.student, model.teacher
    with torch.no_grad():
        s = student.head(student.extract_feat(inputs))
        t = teacher_net.head(teacher_net.extract_feat(inputs))
        own = student.head.loss(student.extract_feat(inputs), samples)["loss"]
    assert s.shape == (4, 10)
    torch.testing.assert_close(losses["loss_kd"], 0.5 * kd_kl_loss(s, t, 2.0))
    torch.testing.assert_close(losses["loss"], own)
    assert float(losses["loss_kd"].detach()) > 0  # the student starts from other weights than the teacher

    # a student with the teacher's weights has nothing to learn from it
    twin = tiny_distiller(teacher, student_checkpoint=str(teacher))
    twin.init_weights()
    twin.eval()
    assert float(twin.loss(inputs, samples)["loss_kd"]) < 1e-6


def test_distilling_while_pruning_a_classifier(teacher: Path, data: Path, tmp_path: Path) -> None:
    cfg = load_config(CLS_CONFIG)
    student = dict(cfg.model)
    cfg.model = dict(type="Distiller", student=student, teacher=None, teacher_checkpoint=str(teacher),
                     student_checkpoint=str(teacher), temperature=2.0, alpha=1.0)
    cfg.custom_imports = dict(imports=[*cfg.custom_imports["imports"], "cpd.mm.distiller"],
                              allow_failed_imports=False)
    runner = train(cfg, tmp_path / "work", cls_options(data, model="model.student"))
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    assert hook.saved == [0.2, 0.4] and hook.materialized
    # only the student was cut; the teacher keeps every parameter of the unpruned model
    full = sum(p.numel() for p in build_model(load_config(CLS_CONFIG, SMALL_RESNET)).parameters())
    assert sum(p.numel() for p in runner.model.teacher.parameters()) == full
    assert sum(p.numel() for p in runner.model.student.parameters()) < full
    # the saved student loads alone, as a plain classifier
    loaded = load_pruned_model(tmp_path / "work" / "thr_0.4.pth")
    assert type(loaded).__name__ == "ImageClassifier"
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in runner.model.student.parameters())


def test_a_killed_classifier_run_resumes_to_the_same_plan_and_weights(data: Path, tmp_path: Path) -> None:
    from mm_tiny import Interrupted

    from cpd.mm.rebuild import prune_target

    def result(runner) -> tuple[dict, dict[str, torch.Tensor]]:
        hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
        return hook.plan["removed"], {k: v.detach().clone() for k, v in prune_target(runner.model).state_dict().items()}

    removed, weights = result(train(CLS_CONFIG, tmp_path / "reference", cls_options(data)))
    work = tmp_path / "resumed"
    with pytest.raises(Interrupted):  # mid-interval, after the first threshold, before the cut
        train(CLS_CONFIG, work, cls_options(data, hooks=[dict(CLS_HOOK), dict(type="CrashHook", at=3)]))
    runner = train(CLS_CONFIG, work, cls_options(data), resume=True)
    got_removed, got_weights = result(runner)
    assert runner.iter == 8 and got_removed == removed and got_weights.keys() == weights.keys()
    for name, ref in weights.items():
        assert got_weights[name].shape == ref.shape, name
        assert torch.allclose(got_weights[name], ref, rtol=1e-5, atol=1e-6), name
