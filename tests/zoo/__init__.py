"""A zoo of tiny pure-torch networks, each exercising one channel-dependency pattern.

Every case builds a fresh, seeded model (same weights every time, global RNG untouched) and fresh
example inputs with batch 2. Every network ends in a submodule named ``head``: the output layer whose
output is the network's output (logits), so its output channels are not prunable.

Usage::

    from zoo import ZOO
    for name, case in ZOO.items():
        model = case.build()
        out = model(*case.inputs())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import attention, branches, conv, necks, windows

SEED = 0
IMAGE = (2, 3, 16, 16)
TOKENS = (2, 8, 16)
SEQUENCE = (2, 8, 16)


@dataclass(frozen=True)
class ZooCase:
    """One pattern network.

    Attributes:
        name: registry key.
        build: returns a new model with seeded, deterministic weights.
        inputs: returns new example inputs (a tuple of tensors, batch 2), the same every call.
        notes: the dependency pattern the network exercises.
    """

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple[torch.Tensor, ...]]
    notes: str


def randomize_norms_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give norm layers non-trivial affine parameters and BN running statistics, in place.

    Default init (weight 1, bias 0, mean 0, var 1) makes every channel look alike to an importance
    criterion and hides wrong index bookkeeping in surgery, so tests use random values instead.
    """
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, norms):
                continue
            if module.weight is not None:
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return model


def seeded(factory: Callable[[], nn.Module], seed: int = SEED) -> Callable[[], nn.Module]:
    """Wrap ``factory`` so each call returns identical weights without touching the global RNG."""

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory()
        return randomize_norms_(model, torch.Generator().manual_seed(seed + 1))

    return build


def randn_inputs(*shapes: tuple[int, ...], seed: int = SEED) -> Callable[[], tuple[torch.Tensor, ...]]:
    """Return a function producing standard-normal tensors of ``shapes``, identical on every call."""

    def inputs() -> tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(shape, generator=generator) for shape in shapes)

    return inputs


def _token_net(attn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    return lambda: attention.TokenTransformer(attn())


_CASES = [
    ("conv_bn_relu_chain", conv.ConvBnReluChain, (IMAGE,), "conv out channels couple with the next conv and its BN"),
    ("residual_blocks", branches.ResidualBlocks, (IMAGE,), "residual add ties block outputs, conv2 and downsample"),
    ("inception_concat", branches.InceptionConcat, (IMAGE,), "concat of 3 unequal branches, then a conv"),
    ("split_unequal_concat", branches.SplitConcat, (IMAGE,), "torch.split [4, 8], convs, concat in swapped order"),
    ("chunk_concat", branches.ChunkConcat, (IMAGE,), "chunk(2); one half identity, one half convs; concat"),
    ("ghost_slice", branches.GhostSlice, (IMAGE,), "concat then x[:, :12]: cheap-conv channels 4..7 are dropped"),
    ("dense_concat", branches.DenseConcat, (IMAGE,), "DenseNet growth: repeated concat of all earlier outputs"),
    ("token_round_trip", attention.TokenRoundTrip, (IMAGE,), "conv -> flatten(2).transpose -> LN/Linear -> back"),
    ("vit_manual_mhsa", _token_net(attention.ManualAttention), (TOKENS,), "qkv reshape/permute, q@k^T, heads"),
    ("vit_torch_mha", _token_net(attention.TorchMHA), (TOKENS,), "nn.MultiheadAttention packed in_proj_weight"),
    ("vit_sdpa", _token_net(attention.SdpaAttention), (TOKENS,), "separate q/k/v, SDPA, inner width != model width"),
    ("swin_window_attention", windows.SwinStage, (IMAGE,), "window partition, bias table[(L, heads)] via buffer"),
    ("vit_loose_params", attention.VitLoose, (IMAGE,), "cls_token concat, pos_embed add, layer-scale gammas"),
    ("depthwise", conv.DepthwiseSeparable, (IMAGE,), "depthwise conv (groups == channels)"),
    ("depthwise_multiplier", conv.DepthwiseMultiplier, (IMAGE,), "depthwise conv with 2 outputs per input"),
    ("grouped_conv", conv.GroupedConv, (IMAGE,), "groups=4 conv between pointwise convs"),
    ("channel_shuffle", conv.ChannelShuffle, (IMAGE,), "view(B, g, C/g, H, W).transpose(1, 2).reshape"),
    ("pixel_shuffle", conv.PixelShuffleUp, (IMAGE,), "PixelShuffle(2): channels fold into space by 4"),
    ("squeeze_excite", branches.SqueezeExcite, (IMAGE,), "x * sigmoid(fc(gap(x))) multiplicative gating"),
    ("glu_gate", branches.GluGate, (IMAGE,), "chunk(2), a * sigmoid(b): channel i pairs with i + 8"),
    ("convnext_layer_scale", branches.ConvNeXtLayerScale, (IMAGE,), "dw conv, permuted LN/MLP, gamma, residual"),
    ("shared_two_inputs", branches.SharedTwoInputs, (IMAGE, IMAGE), "one conv-bn applied to two inputs, added"),
    ("shared_twice", branches.SharedTwice, (IMAGE,), "one conv applied twice in sequence (in == out)"),
    ("conv1d_stack", conv.Conv1dStack, (SEQUENCE,), "Conv1d/BatchNorm1d stack incl. a grouped Conv1d"),
    ("conv_transpose_decoder", conv.ConvTransposeDecoder, (IMAGE,), "ConvTranspose2d weights are (in, out/g)"),
    ("group_norm", conv.GroupNormBlock, (IMAGE,), "GroupNorm(4, 16) between convs"),
    ("layer_norm_permute", conv.LayerNormPermute, (IMAGE,), "LayerNorm channels-last via permute and back"),
    ("fpn_neck", necks.FpnNeck, (IMAGE,), "laterals, upsample + add, concat of levels, fuse conv"),
    ("unet_skip_concat", necks.TinyUnet, (IMAGE,), "encoder/decoder with skip concatenation"),
    ("flatten_linear", conv.FlattenLinear, (IMAGE,), "flatten(1) into Linear: a channel owns H*W inputs"),
    ("gap_classifier", conv.GapClassifier, (IMAGE,), "global average pool, flatten, Linear output layer"),
]

ZOO: dict[str, ZooCase] = {
    name: ZooCase(name, seeded(factory), randn_inputs(*shapes), notes) for name, factory, shapes, notes in _CASES
}

__all__ = ["ZOO", "ZooCase", "randn_inputs", "randomize_norms_", "seeded"]
