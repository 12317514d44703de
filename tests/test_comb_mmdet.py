"""Comb and cut real mmdet single-stage detectors at small input sizes: ``check``'s invariants.

The trace follows the head's training outputs for every level (class scores, boxes, objectness or
centerness); those layers must stay whole.
"""
from __future__ import annotations

import pytest

pytest.importorskip("mmdet")

from task_check import assert_prunes, check_config  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.usefixtures("one_thread")]

P = "mmdet::"
#: a ResNet-18 in place of a config's ResNet-50 (the neck takes its widths)
R18 = {"model.backbone.depth": 18, "model.neck.in_channels": [64, 128, 256, 512]}

#: (config, input size, cfg options): one per family
MODELS = [
    ("retinanet/retinanet_r18_fpn_1x_coco.py", 64, None),
    ("fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py", 64, R18),
    ("atss/atss_r18_fpn_8xb8-amp-lsj-200e_coco.py", 64, None),
    ("gfl/gfl_r50_fpn_1x_coco.py", 64, R18),
    ("yolox/yolox_nano_8xb8-300e_coco.py", 64, None),
    ("rtmdet/rtmdet_tiny_8xb32-300e_coco.py", 64, None),
    ("ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py", 64, None),
    ("yolo/yolov3_mobilenetv2_8xb24-320-300e_coco.py", 64, None),
    ("centernet/centernet-update_r18_fpn_8xb8-amp-lsj-200e_coco.py", 64, None),
]

SLOW_MODELS = [
    ("yolof/yolof_r50-c5_8xb8-1x_coco.py", 64, None),
    ("fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py", 128, None),
]

#: families whose pruned model also goes through ONNX export + onnxruntime in the default run
ONNX_FAMILIES = {"yolox"}


def _id(entry: tuple) -> str:
    return entry[0].split("/")[0]


@pytest.mark.parametrize("config,size,options", MODELS, ids=[_id(m) for m in MODELS])
def test_detector_prunes_exactly(config: str, size: int, options: dict | None) -> None:
    rep, outputs, cut = check_config(P + config, size, options, onnx=_id((config,)) in ONNX_FAMILIES)
    # the output layers are the head's only: one per kind of output and level at most
    assert {name.split(".")[0] for name in outputs} == {"bbox_head"}
    assert_prunes(rep, outputs, cut, share=0.7)


@pytest.mark.slow
@pytest.mark.parametrize("config,size,options", SLOW_MODELS, ids=[_id(m) for m in SLOW_MODELS])
def test_large_detector_prunes_exactly(config: str, size: int, options: dict | None) -> None:
    assert_prunes(*check_config(P + config, size, options), share=0.7)
