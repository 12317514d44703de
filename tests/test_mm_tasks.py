"""The task layer: each config finds its task, each task builds, traces and exports what it should."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

pytest.importorskip("mmpretrain")
pytest.importorskip("mmdet")

from cpd.mm import build_model, example_inputs, load_config, resolve_config, seg_forward  # noqa: E402
from cpd.mm.build import config_root  # noqa: E402
from cpd.mm.tasks import TASKS, register_task, task_of  # noqa: E402
from cpd.mm.tasks.segmentation import Segmentation  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.usefixtures("one_thread")]

PSPNET = "pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py"
RESNET = "resnet/resnet18_8xb32_in1k.py"
RETINANET = "retinanet/retinanet_r18_fpn_1x_coco.py"
CONFIGS = {"segmentation": f"mmseg::{PSPNET}", "classification": f"mmpretrain::{RESNET}",
           "detection": f"mmdet::{RETINANET}"}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: build_model(config, input_size=(64, 64)).eval() for name, config in CONFIGS.items()}


def test_prefixed_and_bare_names_resolve_in_their_library() -> None:
    assert resolve_config(f"mmpretrain::{RESNET}") == config_root("mmpretrain") / RESNET
    assert resolve_config(f"mmdet::{RETINANET}") == config_root("mmdet") / RETINANET
    assert resolve_config(RETINANET) == config_root("mmdet") / RETINANET  # bare: each library in turn
    assert resolve_config(PSPNET) == config_root("mmseg") / PSPNET
    with pytest.raises(FileNotFoundError, match=r"unknown library prefix 'mmfoo'.*mmseg::, mmpretrain::, mmdet::"):
        resolve_config("mmfoo::x.py")
    with pytest.raises(FileNotFoundError, match=r"'mmdet::resnet/none.py'.*shipped with mmdet \(looked under"):
        resolve_config("mmdet::resnet/none.py")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_task_is_found_from_the_config_and_from_the_model(name: str, models: dict) -> None:
    assert task_of(load_config(CONFIGS[name])).name == name
    assert task_of(models[name]).name == name


def test_a_config_without_default_scope_goes_by_its_model_type() -> None:
    assert task_of(Config({"model": {"type": "ImageClassifier"}})).name == "classification"
    assert task_of(Config({"model": {"type": "RetinaNet"}})).name == "detection"
    assert task_of(Config({"model": {"type": "mmseg.EncoderDecoder"}})).name == "segmentation"
    with pytest.raises(ValueError, match=r"no task owns .*'NoSuchModel'.*known tasks: segmentation \(mmseg\)"):
        task_of(Config({"model": {"type": "NoSuchModel"}}))
    with pytest.raises(ValueError, match="no task owns .*model class Linear"):
        task_of(torch.nn.Linear(2, 2))


def test_a_task_name_registers_once() -> None:
    with pytest.raises(ValueError, match="'segmentation' is registered already"):
        register_task(Segmentation())
    assert list(TASKS) == ["segmentation", "classification", "detection"]


def test_example_inputs_follow_the_task(models: dict) -> None:
    assert example_inputs(load_config(CONFIGS["classification"])).shape == (2, 3, 224, 224)  # the test crop
    assert example_inputs(load_config(CONFIGS["detection"])).shape == (2, 3, 320, 320)
    for model in models.values():  # a model built for a size keeps it
        assert example_inputs(model).shape == (2, 3, 64, 64)
    assert example_inputs(load_config(CONFIGS["segmentation"])).shape == (2, 3, 512, 1024)
    assert example_inputs(models["classification"], size=(32, 48), batch=1).shape == (1, 3, 32, 48)


def test_classifier_forwards_give_the_class_logits(models: dict) -> None:
    model, task = models["classification"], TASKS["classification"]
    x = example_inputs(model, size=(64, 64))
    with torch.no_grad():
        outs = task.train_forward(model, x)
        want = model(x, mode="tensor")  # what mmpretrain's own forward computes before the softmax
        assert len(outs) == 1 and outs[0].shape == (2, 1000)
        torch.testing.assert_close(outs[0], want)
        torch.testing.assert_close(task.infer_forward(model, x)[0], want)
    assert task.logits(model, outs) == outs
    assert task.output_modules(model, x) == ["head.fc"]


def test_detector_forwards_give_every_level_of_every_head_output(models: dict) -> None:
    model, task = models["detection"], TASKS["detection"]
    x = example_inputs(model, size=(64, 64))
    with torch.no_grad():
        outs = task.train_forward(model, x)
        want = model(x, mode="tensor")  # (cls_scores, bbox_preds), one tensor per level
    assert [len(kind) for kind in outs] == [5, 5]
    for got, ref in zip(outs, want):
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b)
    logits = task.logits(model, outs)
    assert [t.shape[1] for t in logits] == [model.bbox_head.cls_out_channels * model.bbox_head.num_base_priors] * 5
    assert task.output_modules(model, x) == ["bbox_head.retina_cls", "bbox_head.retina_reg"]


def test_a_two_stage_detector_is_refused_with_the_reason() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", input_size=(64, 64))
    with pytest.raises(TypeError, match="FasterRCNN is not a single-stage detector.*RoIAlign"):
        TASKS["detection"].train_forward(model, torch.zeros(1, 3, 64, 64))


def test_segmentation_logits_leave_the_auxiliary_head_out(models: dict) -> None:
    model, task = models["segmentation"], TASKS["segmentation"]
    x = example_inputs(model, size=(64, 64))
    with torch.no_grad():
        outs = task.train_forward(model, x)
        infer = task.infer_forward(model, x)
        want = model(x, mode="tensor")  # mmseg's inference forward: the decode head only
    assert task.train_forward is seg_forward and len(outs) == 2  # decode + auxiliary (FCN) head
    assert len(task.logits(model, outs)) == 1
    assert len(infer) == 1
    torch.testing.assert_close(infer[0], want)
    torch.testing.assert_close(task.logits(model, outs)[0], want)


def test_exported_segmentor_holds_no_auxiliary_head(models: dict, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from cpd.export import export_onnx

    model, task = models["segmentation"], TASKS["segmentation"]
    x = example_inputs(model, size=(64, 64), batch=1)
    paths = {name: export_onnx(model, x, tmp_path / f"{name}.onnx", forward_fn=fn) for name, fn in {
        "task": task.infer_forward,
        "mmseg": lambda m, t: m(t, mode="tensor"),
        "training": task.train_forward,
    }.items()}
    graphs = {name: onnx.load(str(path)).graph for name, path in paths.items()}
    assert len(graphs["task"].output) == len(graphs["mmseg"].output) == 1
    assert len(graphs["task"].node) == len(graphs["mmseg"].node)
    assert len(graphs["training"].output) == 2
    assert len(graphs["training"].node) > len(graphs["task"].node)  # the FCN head of training only
    weights = {name: {init.name for init in graph.initializer} for name, graph in graphs.items()}
    assert any("auxiliary_head" in w for w in weights["training"])  # the names say where weights come from
    assert not any("auxiliary_head" in w for w in weights["task"]), sorted(weights["task"])[:5]


def test_a_distilling_detector_loads_no_teacher_checkpoint() -> None:
    from cpd.mm.build import model_config

    cfg = load_config("mmdet::lad/lad_r101-paa-r50_fpn_2xb8_coco_1x.py")
    assert str(cfg.model.teacher_ckpt).startswith("http")
    assert model_config(cfg).get("teacher_ckpt") is None


def test_a_mask_classification_head_traces_and_infers_as_mmseg_predicts() -> None:
    """MaskFormer's head reads the input shape from the batch's samples: training traces it with samples carrying
    the shape only, and inference gives mmseg's own semantic logits (class probabilities weighting the masks)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("mmseg::maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py",
                            input_size=(64, 64)).eval()
    task = task_of(model)
    x = example_inputs(model, size=(64, 64))
    with torch.no_grad():
        outs = task.train_forward(model, x)
        infer = task.infer_forward(model, x)
        metas = [dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)) for _ in range(len(x))]
        want = model.decode_head.predict(model.extract_feat(x), metas, model.test_cfg)
    assert task.name == "segmentation" and len(outs) == 2  # class scores and masks, stacked over decoder layers
    assert outs[0].shape[1:3] == outs[1].shape[1:3] == (len(x), 100)
    assert infer[0].shape == (len(x), 150, 64, 64)
    torch.testing.assert_close(infer[0], want)


def test_a_classifier_is_sized_by_its_test_crop_or_its_input_size() -> None:
    """mmpretrain's preprocessor has no size: the test pipeline's crop says it, or a top-level input_size."""
    from cpd.mm.tasks.classification import pipeline_size

    assert pipeline_size([dict(type="ResizeEdge", scale=256, edge="short"), dict(type="CenterCrop", crop_size=224)]
                         ) == (224, 224)
    assert pipeline_size([dict(type="Resize", scale=(320, 240))]) == (240, 320)  # mmcv's (W, H)
    assert pipeline_size([dict(type="Resize", scale=(320, 240), keep_ratio=True)]) is None
    assert pipeline_size([dict(type="LoadImageFromFile"), dict(type="PackInputs")]) is None
    swin = load_config("mmpretrain::swin_transformer/swin-base_16xb64_in1k-384px.py")
    assert task_of(swin).default_size(swin) == (384, 384)
    embedded = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "embedded"
                               / "resnet_digit_pairs.py"))
    model = build_model(embedded)
    assert example_inputs(model, batch=1).shape == (1, 3, 32, 32)  # the size travels with the built model
    assert example_inputs(build_model(embedded, input_size=(48, 40)), batch=1).shape == (1, 3, 48, 40)


def test_a_pruned_classifier_file_keeps_its_input_size(tmp_path: Path) -> None:
    """The file's config text carries input_size, so the reloaded model exports and counts at 32x32."""
    from cpd.mm.pruned import load_pruned_model, save_pruned_model
    from cpd.prune import PruneConfig, Pruner

    embedded = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "embedded"
                               / "resnet_digit_pairs.py"))
    model = build_model(embedded).eval()
    x = example_inputs(model, batch=2)
    task = task_of(model)
    pruner = Pruner(model, (x,), PruneConfig(criterion="magnitude", thresholds=(0.3,), step_fraction=0.3,
                                             round_to=4), forward_fn=task.train_forward)
    pruner.prune_step()
    pruned, plan = pruner.export()
    path = tmp_path / "thr_0.3.pth"
    save_pruned_model(pruned, plan, path, model_cfg=embedded.model, scope="mmpretrain",
                      input_size=task.stated_size(embedded))
    loaded = load_pruned_model(path).eval()
    assert example_inputs(loaded, batch=1).shape == (1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(task.infer_forward(loaded, x)[0], task.infer_forward(pruned.eval(), x)[0])


def test_reported_flops_count_the_inference_graph(models: dict) -> None:
    """evaluate and export count the forward inference runs: PSPNet's auxiliary FCN head is not in it."""
    from cpd.flops import count_macs
    from cpd.mm.evaluation import model_cost

    model = models["segmentation"]
    x = example_inputs(model, batch=1)
    task = task_of(model)
    inference = count_macs(model, (x,), forward_fn=task.infer_forward)
    training = count_macs(model, (x,), forward_fn=task.train_forward)
    assert model_cost(model)["flops"] == inference < training
    classifier = models["classification"]
    assert model_cost(classifier)["flops"] == count_macs(
        classifier, (example_inputs(classifier, batch=1),), forward_fn=task_of(classifier).train_forward)
