"""Building shipped mmseg configs offline on CPU, and running every head with seg_forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("mmseg")

from cpd.mm import (  # noqa: E402
    build_model,
    example_inputs,
    load_config,
    output_modules,
    resolve_config,
    seg_forward,
)
from cpd.mm.build import check_size, model_config, mmseg_config_root, sync_bn_to_bn_  # noqa: E402

pytestmark = pytest.mark.mm

SEGFORMER = "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"
PSPNET = "pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py"
VIT = "vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py"
SWIN = "swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py"
OCRNET = "ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py"
SIZE = (64, 64)

# config -> (segmentor type, number of heads run by training, classes)
CONFIGS = {
    SEGFORMER: ("EncoderDecoder", 1, 150),
    PSPNET: ("EncoderDecoder", 2, 19),
    VIT: ("EncoderDecoder", 2, 150),
    SWIN: ("EncoderDecoder", 2, 150),
    OCRNET: ("CascadeEncoderDecoder", 2, 19),
}


@pytest.fixture(scope="module", params=list(CONFIGS), ids=lambda name: name.split("/")[0])
def built(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    return request.param, build_model(load_config(request.param), input_size=SIZE)


def test_resolve_shipped_name_and_path(tmp_path: Path) -> None:
    shipped = resolve_config(SEGFORMER)
    assert shipped == mmseg_config_root() / SEGFORMER
    assert resolve_config(f"mmseg::{SEGFORMER}") == shipped
    local = tmp_path / "local.py"
    local.write_text("model = dict(type='EncoderDecoder')\n")
    assert resolve_config(local) == local
    with pytest.raises(FileNotFoundError, match="no/such_config.py"):
        resolve_config("no/such_config.py")


def test_cfg_options_are_merged() -> None:
    cfg = load_config(PSPNET, {"model.decode_head.num_classes": 7})
    assert cfg.model.decode_head.num_classes == 7


def test_model_config_is_offline_and_cpu_ready() -> None:
    cfg = load_config(VIT)
    assert cfg.model.pretrained  # the shipped config names a checkpoint
    model_cfg = model_config(cfg, input_size=(96, 64))
    assert model_cfg.pretrained is None
    assert model_cfg.backbone.get("init_cfg") is None
    assert model_cfg.decode_head.norm_cfg.type == "BN"
    assert model_cfg.backbone.img_size == (96, 64)
    # The config itself is left as it was.
    assert cfg.model.pretrained and cfg.model.decode_head.norm_cfg.type == "SyncBN"

    swin_cfg = model_config(load_config(SWIN))
    assert swin_cfg.backbone.get("init_cfg") is None
    assert "img_size" not in swin_cfg.backbone


def test_a_distilling_detectors_teacher_config_points_at_the_shipped_copy() -> None:
    """mmdet's LD names its teacher's config relative to mmdet's source tree; the build finds the installed copy
    and drops the teacher's checkpoint (nothing is downloaded)."""
    pytest.importorskip("mmdet")
    cfg = load_config("mmdet::ld/ld_r18-gflv1-r101_fpn_1x_coco.py")
    assert cfg.model.teacher_config.startswith("configs/") and cfg.model.teacher_ckpt
    model_cfg = model_config(cfg)
    assert Path(model_cfg.teacher_config).is_file() and model_cfg.teacher_config.endswith(
        cfg.model.teacher_config) and model_cfg.teacher_ckpt is None


def test_vit_is_built_for_the_input_size() -> None:
    model = build_model(load_config(VIT), input_size=(64, 96))
    assert model.backbone.pos_embed.shape == (1, 4 * 6 + 1, 384)


@pytest.mark.parametrize("size", [(0, 8), (8,), "64", (8.0, 8), None])
def test_check_size_rejects(size: object) -> None:
    with pytest.raises(ValueError, match="size must be"):
        check_size(size)


def test_build_and_seg_forward_reach_every_parameter(built: tuple[str, nn.Module]) -> None:
    name, model = built
    kind, heads, classes = CONFIGS[name]
    assert type(model).__name__ == kind
    assert type(model.data_preprocessor).__name__ == "SegDataPreProcessor"
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())

    model.train()
    model.zero_grad()
    outputs = seg_forward(model, example_inputs(model, size=SIZE))
    assert len(outputs) == heads
    assert all(out.shape[:2] == (2, classes) for out in outputs)
    sum(out.square().mean() for out in outputs).backward()
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unreached == []


def test_output_modules_are_the_logit_convs(built: tuple[str, nn.Module]) -> None:
    name, model = built
    _, heads, classes = CONFIGS[name]
    names = output_modules(model)
    assert len(names) == heads
    modules = dict(model.named_modules())
    assert all(n.endswith("conv_seg") and modules[n].out_channels == classes for n in names)


def test_example_inputs_shape_and_repeatable() -> None:
    cfg = load_config(SEGFORMER)
    assert example_inputs(cfg, batch=1).shape == (1, 3, 512, 512)  # the config's crop size
    a = example_inputs(cfg, size=(32, 48), batch=3)
    assert a.shape == (3, 3, 32, 48)
    assert torch.equal(a, example_inputs(cfg, size=(32, 48), batch=3))
    with pytest.raises(ValueError, match="batch"):
        example_inputs(cfg, batch=0)


def test_sync_bn_to_bn_keeps_state() -> None:
    sync = nn.SyncBatchNorm(4)
    with torch.no_grad():
        sync.weight.uniform_()
        sync.running_mean.uniform_()
    sync.bias.requires_grad_(False)
    net = sync_bn_to_bn_(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(sync)))
    bn = net[1][0]
    assert type(bn) is nn.BatchNorm2d
    assert torch.equal(bn.weight, sync.weight) and torch.equal(bn.running_mean, sync.running_mean)
    assert bn.weight.requires_grad and not bn.bias.requires_grad


def test_seg_forward_rejects_other_models() -> None:
    with pytest.raises(TypeError, match="EncoderDecoder"):
        seg_forward(nn.Conv2d(3, 3, 1), torch.zeros(1, 3, 8, 8))
