"""Comb and cut real mmsegmentation models of many families at small input sizes: ``check``'s invariants."""
from __future__ import annotations

import warnings

import pytest

pytest.importorskip("mmseg")

from cpd.check import check  # noqa: E402
from cpd.mm import build_model, example_inputs, load_config, seg_forward  # noqa: E402

pytestmark = pytest.mark.mm

#: (config shipped with mmseg, input size): one per family, small variants where mmseg has them
MODELS = [
    ("vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py", 64),
    ("swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py", 64),
    ("segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py", 64),
    ("pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py", 64),
    ("deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py", 64),
    ("unet/unet-s5-d16_fcn_4xb4-160k_cityscapes-512x1024.py", 64),
    ("bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py", 64),
    ("stdc/stdc1_4xb12-80k_cityscapes-512x1024.py", 64),
    ("ocrnet/ocrnet_hr18s_4xb4-80k_ade20k-512x512.py", 64),
    ("beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py", 32),
    ("segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py", 64),
    ("twins/twins_svt-s_uperhead_8xb2-160k_ade20k-512x512.py", 64),
    ("segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py", 64),
    ("cgnet/cgnet_fcn_4xb4-60k_cityscapes-680x680.py", 64),
    ("ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py", 64),
    ("fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py", 64),
    ("maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py", 64),  # its head reads the batch's samples
]

#: the same invariants on models too heavy for the default run (ViT-B/L, large inputs)
SLOW_MODELS = [
    ("mobilenet_v3/mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py", 392),  # LRASPP pools 49x49
    ("mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512-ms.py", 32),
    ("setr/setr_vit-l-mla_8xb1-160k_ade20k-512x512.py", 32),
    ("mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py", 64),
]


#: families whose pruned model also goes through ONNX export + onnxruntime in the default run
ONNX_FAMILIES = {"vit", "segformer", "pspnet"}


def _check(config: str, size: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(load_config(config), input_size=(size, size))
        x = example_inputs(model, size=(size, size))
        onnx = config.split("/")[0] in ONNX_FAMILIES
        return check(model, (x,), forward_fn=seg_forward, ratio=0.4, seed=0, onnx=onnx)


def _assert_prunes(rep) -> None:
    assert rep.ok, rep.failures
    assert rep.rel_err <= 1e-5
    # everything but the output layers (and groups with a single unit) must be prunable
    assert rep.prunable_groups >= 0.75 * rep.groups, rep.not_prunable
    assert rep.params_after < 0.8 * rep.params_before
    if rep.onnx is not None:
        assert rep.onnx["ok"], rep.onnx


@pytest.mark.parametrize("config,size", MODELS, ids=[c.split("/")[0] for c, _ in MODELS])
def test_real_model_prunes_exactly(config: str, size: int) -> None:
    _assert_prunes(_check(config, size))


@pytest.mark.slow
@pytest.mark.parametrize("config,size", SLOW_MODELS, ids=[c.split("/")[0] for c, _ in SLOW_MODELS])
def test_large_real_model_prunes_exactly(config: str, size: int) -> None:
    _assert_prunes(_check(config, size))
