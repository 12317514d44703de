"""Gaps of the core that real models hit, each a test of its own once closed.

- GroupNorm with one group (PoolFormer's norm, mmpretrain and mmseg): the masked reference
  (``cpd/graph/reference.py``, ``MaskedTracer._live_stat``) keeps its statistics to live channels, as for
  LayerNorm, so a correct cut equals the reference.
- Halves taken by slicing at ``x.shape[1] // 2`` (CSPNet's stages, mmpretrain): the slice rule ties channel j
  of the first half to channel j of the second, as for ``chunk(2)``, so the split point follows a cut.
- Indices computed by a heavy operator (ViG's k nearest neighbours, from distances a matrix product gives):
  the shape-only trace leaves those values undefined, so comb and the cut verification run the forward with
  every operator computed when the shape-only run fails.
- ``reshape(B, N, 3, num_heads, -1)`` with 3 heads (DeiT-Tiny): the literal 3 of q/k/v and ``num_heads`` are the
  same number; only the last is tied to the attribute, so each head stays a unit of its own.
- Writes through a view (``p[:, 1:] = p[:, 1:] + side(x)``: TNT's patch embedding): the masked reference leaves
  view operators' outputs as views (their base is masked already), so the write reaches the base.
- Heads split by ``C // num_heads`` with C read from the input (Twins-PCPVT's sub-sampled attention): the cut
  verification probes every group through any unit, so a head whose removal breaks the split is found.
- An L2 norm of an all-zero pixel (SSD's L2Norm at random weights): the unpruned model's gradients are
  non-finite too, so ``check`` notes it instead of failing the cut; infinities only the cut brings still fail.
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


class _NearestNeighbours(nn.Module):
    """A graph layer: each token gathers the features of its nearest token (by a matrix product of features)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.mix = nn.Linear(32, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (B, N, C)
        sim = h @ h.transpose(1, 2)  # heavy: its values are skipped in a shape-only run
        idx = sim.topk(2, dim=-1).indices[..., 1]  # (B, N)
        near = torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return self.out(self.mix(torch.cat((h, near), dim=-1)))


def test_indices_from_a_heavy_operator_trace_and_prune_exactly(one_thread) -> None:
    torch.manual_seed(0)
    model, x = _NearestNeighbours(), torch.randn(2, 300, 4)  # 2 x 300 x 300 distances: a shape-only run skips them
    report = check(model, (x,), ratio=0.4)
    assert report.ok, report.failures
    assert report.removed_units > 0


class _ThreeHeads(nn.Module):
    """Self-attention spelled as mmpretrain's: one qkv projection split by ``reshape(B, N, 3, heads, -1)``."""

    def __init__(self, dims: int = 24, num_heads: int = 3) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dims, dims * 3)
        self.proj = nn.Linear(dims, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


def test_three_heads_stay_three_units(one_thread) -> None:
    from cpd.combing import comb

    torch.manual_seed(0)
    model, x = _ThreeHeads(), torch.randn(2, 5, 24)
    graph = comb(model, (x,))
    heads = [g for g in graph.groups if g.kind == "head"]
    assert len(heads) == 1 and heads[0].num_units == 3 and heads[0].prunable
    report = check(model, (x,), ratio=0.4, graph=graph)
    assert report.ok, report.failures


class _WriteThroughView(nn.Module):
    """Adds a side branch to every token but the first, in place through a slice (TNT's patch embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.side = nn.Linear(4, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.embed(x)
        p[:, 1:] = p[:, 1:] + self.side(x[:, 1:])
        return self.out(p)


def test_a_write_through_a_view_prunes_exactly(one_thread) -> None:
    torch.manual_seed(0)
    report = check(_WriteThroughView(), (torch.randn(2, 5, 4),), ratio=0.4)
    assert report.ok, report.failures
    assert report.removed_units > 0


class _SubsampledAttention(nn.Module):
    """Twins' global sub-sampled attention: q is split by the *input's* width over ``num_heads``
    (``C // self.num_heads``, C read from ``x.shape``), k/v by ``self.head_dims``."""

    def __init__(self, dims: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.num_heads, self.head_dims = heads, dims // heads
        self.q = nn.Linear(dims, dims)
        self.kv = nn.Linear(dims, 2 * dims)
        self.proj = nn.Linear(dims, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
        k, v = self.kv(x).reshape(b, -1, 2, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        out = torch.softmax(q @ k.transpose(-2, -1), -1) @ v
        return x + self.proj(out.transpose(1, 2).reshape(b, n, c))


class _SubsampledBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.blocks = nn.Sequential(_SubsampledAttention(), _SubsampledAttention())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x)))


def test_heads_whose_split_reads_the_input_width_are_probed_by_every_unit(one_thread) -> None:
    """Removing the first head would empty ``head_dims`` (tied to the first head's channels), so the cut
    verification must try another head: the split ``C // num_heads`` then breaks, and the heads stay."""
    from cpd.combing import comb
    from cpd.surgery import cut_

    torch.manual_seed(0)
    model, x = _SubsampledBlocks().eval(), torch.randn(2, 5, 6)
    graph = comb(model, (x,))
    for group in graph.prunable():
        for unit in range(group.num_units):
            if group.emptied_member([unit]) is not None:
                continue
            twin = _SubsampledBlocks().eval()
            twin.load_state_dict(model.state_dict())
            cut_(twin, graph, {group.id: [unit]})
            assert twin(x).shape == (2, 5, 3), (group.id, unit)
    report = check(model, (x,), ratio=0.5)
    assert report.ok, report.failures


class _ZeroNorm(nn.Module):
    """SSD's L2Norm: a pixel that is zero in every channel gives sqrt(0) an infinite gradient, pruned or not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1, bias=False)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.out(y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))  # mmdet's L2Norm


def test_non_finite_gradients_of_the_unpruned_model_are_noted_not_failed(one_thread) -> None:
    torch.manual_seed(0)
    model = _ZeroNorm()
    x = torch.randn(2, 3, 8, 8)
    x[:, :, 0, 0] = 0.0  # one pixel is zero in every channel of the normalised features
    report = check(model, (x,), ratio=0.3)
    assert report.ok, report.failures
    assert report.notes and "unpruned model's gradients are non-finite too" in report.notes[0]


def test_non_finite_gradients_the_cut_brings_still_fail(one_thread, monkeypatch) -> None:
    """Only the unpruned model's own infinities are excused: a cut whose backward alone is non-finite fails."""
    import cpd.check as check_module

    calls: list[int] = []

    def pruned_only(model, inputs, forward_fn):
        calls.append(1)
        return "non-finite gradients in ['conv.weight']" if len(calls) == 1 else ""

    monkeypatch.setattr(check_module, "_backward_ok", pruned_only)
    torch.manual_seed(0)
    report = check(_GroupNormOne(), (torch.randn(2, 3, 16, 16),), ratio=0.4)
    assert not report.ok and report.failures == ["backward: non-finite gradients in ['conv.weight']"]
    assert len(calls) == 2  # the unpruned model was asked too


class _InfiniteOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.out(torch.relu(self.conv(x)))
        return torch.cat((y[:, :1] / 0.0, y[:, 1:]), 1)  # infinite everywhere, pruned or not


def test_outputs_non_finite_in_the_unpruned_model_are_noted_not_failed(one_thread) -> None:
    torch.manual_seed(0)
    report = check(_InfiniteOutput(), (torch.randn(2, 3, 8, 8),), ratio=0.3)
    assert report.ok, report.failures
    assert any("not finite, as the unpruned model's" in note for note in report.notes)
