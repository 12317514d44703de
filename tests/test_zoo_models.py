"""Every zoo network builds, runs forward + backward, is deterministic and ends in its ``head``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo import ZOO, ZooCase

CASES = pytest.mark.parametrize("case", list(ZOO.values()), ids=list(ZOO))
# The patterns the graph tests rely on; extra cases may be added freely.
REQUIRED = frozenset(
    "conv_bn_relu_chain residual_blocks inception_concat split_unequal_concat chunk_concat ghost_slice "
    "token_round_trip vit_manual_mhsa vit_torch_mha vit_sdpa swin_window_attention vit_loose_params "
    "depthwise depthwise_multiplier grouped_conv channel_shuffle squeeze_excite convnext_layer_scale "
    "shared_two_inputs shared_twice conv1d_stack conv_transpose_decoder group_norm layer_norm_permute "
    "fpn_neck unet_skip_concat gap_classifier".split()
)


def test_registry_covers_the_patterns() -> None:
    assert REQUIRED <= set(ZOO)
    assert all(name == case.name and case.notes for name, case in ZOO.items())


@CASES
def test_builds_tiny_and_seeded(case: ZooCase) -> None:
    rng_before = torch.random.get_rng_state()
    a, b = case.build(), case.build()
    assert torch.equal(rng_before, torch.random.get_rng_state()), "build() must not consume the global RNG"
    assert a is not b
    assert 0 < sum(p.numel() for p in a.parameters()) < 50_000
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@CASES
def test_inputs_are_fresh_and_repeatable(case: ZooCase) -> None:
    first, second = case.inputs(), case.inputs()
    assert isinstance(first, tuple) and first
    for x, y in zip(first, second, strict=True):
        assert x is not y and torch.equal(x, y) and x.shape[0] == 2


@CASES
def test_forward_backward_reaches_every_parameter(case: ZooCase) -> None:
    model = case.build().train()
    out = model(*case.inputs())
    assert isinstance(out, torch.Tensor) and out.shape[0] == 2 and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} is not used by forward"
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, f"{name} gets no gradient"


@CASES
def test_eval_is_deterministic(case: ZooCase) -> None:
    model_a, model_b = case.build().eval(), case.build().eval()
    with torch.no_grad():
        out = model_a(*case.inputs())
        assert torch.equal(out, model_a(*case.inputs()))
        assert torch.equal(out, model_b(*case.inputs()))


@CASES
def test_output_comes_from_head(case: ZooCase) -> None:
    model = case.build().eval()
    assert isinstance(model.head, (nn.Conv1d, nn.Conv2d, nn.Linear))
    seen: list[torch.Tensor] = []
    handle = model.head.register_forward_hook(lambda _m, _i, output: seen.append(output))
    with torch.no_grad():
        out = model(*case.inputs())
    handle.remove()
    assert len(seen) == 1 and seen[0] is out
    linear = isinstance(model.head, nn.Linear)
    width = model.head.out_features if linear else model.head.out_channels
    assert out.shape[-1 if linear else 1] == width
