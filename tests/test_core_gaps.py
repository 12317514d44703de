"""Gaps of the core that real models hit, each a test of its own once closed.

- GroupNorm with one group (PoolFormer's norm, mmpretrain and mmseg): the masked reference
  (``cpd/graph/reference.py``, ``MaskedTracer._live_stat``) keeps its statistics to live channels, as for
  LayerNorm, so a correct cut equals the reference.
- Halves taken by slicing at ``x.shape[1] // 2`` (CSPNet's stages, mmpretrain): the slice rule ties channel j
  of the first half to channel j of the second, as for ``chunk(2)``, so the split point follows a cut.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cpd.check import check


class _GroupNormOne(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3)
        self.norm = nn.GroupNorm(1, 16)
        self.mix = nn.Conv2d(16, 16, 1)
        self.out = nn.Conv2d(16, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mix(self.norm(self.stem(x))))


def test_group_norm_with_one_group_prunes_exactly(one_thread) -> None:
    torch.manual_seed(0)
    report = check(_GroupNormOne(), (torch.randn(2, 3, 16, 16),), ratio=0.4)
    assert report.ok, report.failures


class _SlicedHalves(nn.Module):
    """A CSP stage: expand, split in halves by slicing at the width's half, one branch through a block, concat."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 16, 1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.final = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x)
        split = x.shape[1] // 2
        xa, xb = x[:, :split], x[:, split:]
        return self.final(torch.cat((xa, self.block(xb)), dim=1))


def test_halves_sliced_at_the_width_prune_exactly_and_in_pairs(one_thread) -> None:
    from cpd.combing import comb

    torch.manual_seed(0)
    model, x = _SlicedHalves(), torch.randn(2, 3, 8, 8)
    graph = comb(model, (x,))
    expand = [g for g in graph.groups if any(m.name == "expand.weight" and m.dim == 0 for m in g.members)]
    assert len(expand) == 1 and expand[0].prunable
    unit = next(m.unit for m in expand[0].members if m.name == "expand.weight")
    assert list(unit[:8]) == list(unit[8:]) and len(set(unit)) == 8  # 16 channels, one unit per pair (j, j + 8)
    report = check(model, (x,), ratio=0.4, graph=graph)
    assert report.ok, report.failures
    assert report.removed_units > 0
