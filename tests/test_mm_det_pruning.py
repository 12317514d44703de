"""The PruningHook, the pruned-model files and kill-and-resume on an mmdet detector (generated digit boxes)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("pycocotools")
pytest.importorskip("sklearn")

from det_tiny import DET_CONFIG, DET_HOOK, det_options  # noqa: E402
from mm_tiny import Interrupted, ProbeHook, probe_batch, student_outputs  # noqa: E402

from cpd.mm import build_model, load_config  # noqa: E402
from cpd.mm.pruned import load_pruned_model  # noqa: E402
from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.rebuild import prune_target  # noqa: E402
from cpd.mm.tasks import task_of  # noqa: E402
from cpd.mm.train import train  # noqa: E402
from cpd.prune import read_checkpoint  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(180), pytest.mark.usefixtures("one_thread")]

KD_CONFIG = DET_CONFIG.with_name("retinanet_digit_boxes_kd.py")
#: the head's output layers: what the detector predicts, never pruned
OUTPUT_LAYERS = ("bbox_head.retina_cls", "bbox_head.retina_reg")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpd.data.digit_boxes import write_coco_layout

    return write_coco_layout(tmp_path_factory.mktemp("boxes") / "boxes", n_train=32, n_val=4, seed=0)


def test_the_hook_prunes_a_detector_and_each_threshold_loads_alone(data: Path, tmp_path: Path) -> None:
    from mmdet.registry import MODELS

    ProbeHook.records = {}
    work = tmp_path / "work"
    runner = train(DET_CONFIG, work, det_options(data, hooks=[dict(DET_HOOK), dict(type="ProbeHook")]))
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    assert hook.task.name == "detection"
    assert [e.iteration for e in hook.pruner.history] == [2, 4]
    assert hook.saved == [0.2, 0.4] and hook.materialized and runner.iter == 8

    full = build_model(load_config(DET_CONFIG))
    widths = {name: m.out_channels for name, m in full.named_modules() if name in OUTPUT_LAYERS}
    # the files load from themselves alone: moved away from the run, without the config or a dependency JSON
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    sizes = []
    assert sorted(ProbeHook.records) == ["thr_0.2.pth", "thr_0.4.pth"]
    for name, expected in ProbeHook.records.items():
        shutil.copy(work / name, alone / name)
        plan, _ = read_checkpoint(alone / name)
        assert plan["summary"]["sparsity"] >= float(name[4:-4])
        loaded = load_pruned_model(alone / name)
        assert task_of(loaded).name == "detection" and type(loaded).__name__ == "RetinaNet"
        assert {n: m.out_channels for n, m in loaded.named_modules() if n in OUTPUT_LAYERS} == widths
        sizes.append(sum(p.numel() for p in loaded.parameters()))
        got = student_outputs(loaded, probe_batch())
        assert len(got) == 6  # class scores, then boxes, of 3 levels
        for a, b in zip(got, expected, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (name, float((a - b).abs().max()))
    full_size = sum(p.numel() for p in full.parameters())
    assert full_size > sizes[0] > sizes[1] == sum(p.numel() for p in runner.model.parameters())
    # and through mmdet's MODELS, as a config's model
    built = MODELS.build(dict(type="PrunedModel", checkpoint=str(alone / "thr_0.4.pth")))
    assert sum(p.numel() for p in built.parameters()) == sizes[1]


def result(runner) -> tuple[dict, list, dict[str, torch.Tensor]]:
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    state = {k: v.detach().clone() for k, v in prune_target(runner.model).state_dict().items()}
    return hook.plan["removed"], [e.to_dict() for e in hook.pruner.history], state


def test_a_killed_detector_run_resumes_to_the_same_plan_and_weights(data: Path, tmp_path: Path) -> None:
    removed, history, weights = result(train(DET_CONFIG, tmp_path / "reference", det_options(data)))
    work = tmp_path / "resumed"
    with pytest.raises(Interrupted):  # mid-interval, after the first threshold, before the cut
        train(DET_CONFIG, work, det_options(data, hooks=[dict(DET_HOOK), dict(type="CrashHook", at=3)]))
    assert (work / "iter_3.pth").is_file() and not (work / "thr_0.4.pth").exists()
    runner = train(DET_CONFIG, work, det_options(data), resume=True)
    got_removed, got_history, got_weights = result(runner)
    assert runner.iter == 8 and got_removed == removed and got_history == history
    assert got_weights.keys() == weights.keys()
    for name, ref in weights.items():
        assert got_weights[name].shape == ref.shape, name
        assert torch.allclose(got_weights[name], ref, rtol=1e-5, atol=1e-6), name
    ref_plan, _ = read_checkpoint(tmp_path / "reference" / "thr_0.4.pth")
    assert read_checkpoint(work / "thr_0.4.pth")[0]["removed"] == ref_plan["removed"]


def test_distilling_while_pruning_a_detector(data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pth"
    torch.save({"state_dict": build_model(load_config(DET_CONFIG)).state_dict(), "meta": {}}, teacher)
    # the shipped distillation config, at the tiny run's schedule
    options = det_options(data, **{"model.teacher_checkpoint": str(teacher), "model.student_checkpoint": str(teacher),
                                   "model.detection_kd.conf_thr": 0.3})
    runner = train(KD_CONFIG, tmp_path / "work", options)
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    assert hook.saved == [0.2, 0.4] and hook.materialized
    logged = runner.message_hub.log_scalars
    assert {"train/loss_kd", "train/loss_kd_box", "train/loss_cls"} <= set(logged)
    assert all(torch.isfinite(torch.tensor(logged[k].current())) for k in ("train/loss_kd", "train/loss_kd_box"))
    # only the student was cut; the saved student loads alone, as a plain detector
    full = sum(p.numel() for p in build_model(load_config(DET_CONFIG)).parameters())
    assert sum(p.numel() for p in runner.model.teacher.parameters()) == full
    student = sum(p.numel() for p in runner.model.student.parameters())
    loaded = load_pruned_model(tmp_path / "work" / "thr_0.4.pth")
    assert type(loaded).__name__ == "RetinaNet" and sum(p.numel() for p in loaded.parameters()) == student < full


def test_a_dependency_json_and_continue_finetune_false_stop_the_detector_at_the_target(data: Path,
                                                                                      tmp_path: Path) -> None:
    from cpd import comb, save_deps

    model = build_model(load_config(DET_CONFIG))
    task = task_of(model)
    deps = tmp_path / "deps.json"  # what `cpd comb CONFIG --out deps.json` writes
    save_deps(comb(model, (task.example_inputs(model),), forward_fn=task.train_forward), deps)
    hook = {**DET_HOOK, "prune_cfg": str(deps), "continue_finetune": False}
    runner = train(DET_CONFIG, tmp_path / "work", det_options(data, hooks=[hook]))
    pruning = next(h for h in runner.hooks if isinstance(h, PruningHook))
    # the run stops after the step that reached the last threshold; the model is left masked, not cut
    assert pruning.saved == [0.2, 0.4] and not pruning.materialized and runner.iter == 4
    # the JSON gives the plan the hook's own combing gives
    combed = {**DET_HOOK, "continue_finetune": False}
    reference = train(DET_CONFIG, tmp_path / "combed", det_options(data, hooks=[combed]))
    ref = next(h for h in reference.hooks if isinstance(h, PruningHook))
    assert pruning.pruner.removed() == ref.pruner.removed() and pruning.pruner.removed()
    assert sum(p.numel() for p in load_pruned_model(tmp_path / "work" / "thr_0.4.pth").parameters()) < \
        sum(p.numel() for p in model.parameters())
