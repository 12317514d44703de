"""Comb and cut real mmpretrain classifiers of many families at small input sizes: ``check``'s invariants."""
from __future__ import annotations

import pytest

pytest.importorskip("mmpretrain")

from task_check import assert_prunes, check_config  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.usefixtures("one_thread")]

P = "mmpretrain::"
#: a Swin small enough for 64 px: windows of 4, smaller maps padded, tiny widths
TINY_SWIN = {"model.backbone.pad_small_map": True, "model.backbone.window_size": 4,
             "model.backbone.arch": dict(_delete_=True, embed_dims=32, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4]),
             "model.head.in_channels": 256}

TINY_CONVNEXT = {"model.backbone.arch": dict(_delete_=True, depths=[1, 1, 2, 1], channels=[32, 64, 128, 256]),
                 "model.head.in_channels": 256}

#: (config, input size, cfg options, share of groups that must be prunable): one per family
MODELS = [
    ("resnet/resnet18_8xb32_in1k.py", 64, None, 0.75),
    ("deit/deit-tiny_4xb256_in1k.py", 64, None, 0.45),  # 3 heads of 64: each head group is one unit
    ("swin_transformer/swin-tiny_16xb64_in1k.py", 64, TINY_SWIN, 0.75),
    ("convnext/convnext-tiny_32xb128_in1k.py", 64, TINY_CONVNEXT, 0.75),
    ("efficientnet/efficientnet-b0_8xb32_in1k.py", 64, None, 0.75),
    ("mobilenet_v2/mobilenet-v2_8xb32_in1k.py", 64, None, 0.75),
    ("mobilenet_v3/mobilenet-v3-small_8xb128_in1k.py", 64, None, 0.75),
    ("regnet/regnetx-400mf_8xb128_in1k.py", 64, None, 0.75),
    ("shufflenet_v2/shufflenet-v2-1x_16xb64_in1k.py", 64, None, 0.75),
    ("mobilevit/mobilevit-small_8xb128_in1k.py", 64, None, 0.75),
    ("repvgg/repvgg-A0_8xb32_in1k.py", 64, None, 0.75),
    ("convnext_v2/convnext-v2-atto_32xb32_in1k.py", 64, None, 0.75),
]

#: the same on heavier or slower families, left out of the default run
SLOW_MODELS = [
    ("convnext/convnext-tiny_32xb128_in1k.py", 64, None, 0.75),
    ("vision_transformer/vit-base-p16_64xb64_in1k.py", 64, None, 0.75),
    ("densenet/densenet121_4xb256_in1k.py", 64, None, 0.75),
    ("hrnet/hrnet-w18_4xb32_in1k.py", 64, None, 0.75),
    ("resnext/resnext50-32x4d_8xb32_in1k.py", 64, None, 0.75),
    ("seresnet/seresnet50_8xb32_in1k.py", 64, None, 0.75),
    ("efficientnet_v2/efficientnetv2-b0_8xb32_in1k.py", 64, None, 0.75),
    ("mobileone/mobileone-s0_8xb32_in1k.py", 64, None, 0.75),
    ("levit/levit-128_8xb256_in1k.py", 64, None, 0.5),
    ("t2t_vit/t2t-vit-t-14_8xb64_in1k.py", 64, None, 0.75),
    ("tinyvit/tinyvit-5m_8xb256_in1k.py", 64, None, 0.6),
]

#: families whose pruned model also goes through ONNX export + onnxruntime in the default run
ONNX_FAMILIES = {"deit"}


def _id(entry: tuple) -> str:
    return entry[0].split("/")[0]


@pytest.mark.parametrize("config,size,options,share", MODELS, ids=[_id(m) for m in MODELS])
def test_classifier_prunes_exactly(config: str, size: int, options: dict | None, share: float) -> None:
    rep, outputs, cut = check_config(P + config, size, options, onnx=_id((config,)) in ONNX_FAMILIES)
    assert_prunes(rep, outputs, cut, share)
    assert [name.split(".")[0] for name in outputs] == ["head"]  # the class logits come from the head only


@pytest.mark.slow
@pytest.mark.parametrize("config,size,options,share", SLOW_MODELS, ids=[_id(m) for m in SLOW_MODELS])
def test_large_classifier_prunes_exactly(config: str, size: int, options: dict | None, share: float) -> None:
    assert_prunes(*check_config(P + config, size, options), share)
