"""Comb and cut over every pattern network: the invariants of ``check`` and the structure of the groups."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cpd import comb, cut_, load_deps, save_deps
from cpd.check import check, random_plan
from cpd.graph.forward import run_forward
from zoo import ZOO

CASES = sorted(ZOO)

#: patterns whose code spells a width literally, so some group must be found not prunable (a safe verdict)
LITERAL_WIDTH = {"vit_manual_mhsa", "swin_window_attention", "vit_loose_params", "split_unequal_concat",
                 "ghost_slice"}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_check_invariants_hold(name: str, ratio: float) -> None:
    case = ZOO[name]
    rep = check(case.build(), case.inputs(), ratio=ratio, seed=1)
    assert rep.ok, rep.failures
    assert rep.prunable_groups >= 1, rep.not_prunable
    assert rep.params_after < rep.params_before
    assert rep.macs_after <= rep.macs_before
    assert rep.rel_err <= 1e-5


@pytest.mark.parametrize("name", CASES)
def test_pruned_model_exports_to_onnx(name: str) -> None:
    pytest.importorskip("onnxruntime")
    case = ZOO[name]
    rep = check(case.build(), case.inputs(), ratio=0.3, seed=2, onnx=True)
    assert rep.ok, rep.failures
    assert rep.onnx["ok"] and rep.onnx["max_abs_diff"] <= 1e-4, rep.onnx


@pytest.mark.parametrize("name", CASES)
def test_output_layer_is_never_prunable(name: str) -> None:
    case = ZOO[name]
    graph = comb(case.build(), case.inputs())
    head = [g for g in graph.groups if any(m.name == "head.weight" and m.dim == 0 for m in g.members)]
    assert head, "the output layer's channels must appear in a group"
    assert all(not g.prunable and "model output" in g.reason for g in head)


@pytest.mark.parametrize("name", CASES)
def test_every_member_index_has_a_unit(name: str) -> None:
    case = ZOO[name]
    model = case.build()
    graph = comb(model, case.inputs())
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    for g in graph.groups:
        for m in g.members:
            assert m.unit.min() >= 0 and m.unit.max() < g.num_units
            if m.kind != "attr":
                assert len(m.unit) == tensors[m.name].shape[m.dim]
        assert set(np.concatenate([m.unit for m in g.members]).tolist()) == set(range(g.num_units))


@pytest.mark.parametrize("name", ["vit_torch_mha", "vit_sdpa", "swin_window_attention"])
def test_attention_heads_are_whole_units(name: str) -> None:
    case = ZOO[name]
    graph = comb(case.build(), case.inputs())
    heads = [g for g in graph.groups if g.kind == "head"]
    assert heads
    for g in heads:
        # every member gives each head the same number of channels, and some member (the qkv projection) many
        params = [m for m in g.members if m.kind == "param"]
        per_member = [np.bincount(m.unit, minlength=g.num_units) for m in params]
        assert all(len(set(c.tolist())) == 1 for c in per_member), [(m.name, c) for m, c in zip(params, per_member)]
        assert max(int(c[0]) for c in per_member) > 1


def test_head_pruning_keeps_head_dim() -> None:
    case = ZOO["vit_torch_mha"]
    model = case.build()
    graph = comb(model, case.inputs())
    g = next(g for g in graph.prunable() if g.kind == "head")
    mha = model.block.attn.mha
    head_dim = mha.head_dim
    cut_(model, graph, {g.id: [0]})
    assert mha.num_heads == g.num_units - 1
    assert mha.in_proj_weight.shape[0] == 3 * head_dim * (g.num_units - 1)
    out = run_forward(model, case.inputs(), None)[0]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(LITERAL_WIDTH))
def test_literal_widths_give_a_safe_verdict(name: str) -> None:
    case = ZOO[name]
    graph = comb(case.build(), case.inputs())
    reasons = [g.reason for g in graph.groups if not g.prunable]
    assert any("breaks the forward" in r or "grid" in r for r in reasons), reasons


def test_concat_offsets_map_to_the_right_channels() -> None:
    case = ZOO["unet_skip_concat"]
    model = case.build()
    graph = comb(model, case.inputs())
    multi = [m for g in graph.groups for m in g.members
             if m.kind == "param" and m.dim == 1 and len(set(m.unit.tolist())) < len(m.unit)]
    concat_members = [m for g in graph.groups for m in g.members if m.kind == "param" and m.dim == 1]
    # every input channel of a layer fed by the concatenation is a unit of its own (offsets kept apart)
    assert concat_members and multi == []
    rep = check(model, case.inputs(), ratio=0.5, seed=3)
    assert rep.ok, rep.failures


def _corrupt_concat(graph, model_inputs_case: str):
    """Swap two input-channel indices of a layer fed by a concatenation, across the two concat parts."""
    for g in graph.prunable():
        for m in g.members:
            if m.kind == "param" and m.dim == 1 and len(m.unit) >= 4:
                other = [o for gg in graph.prunable() for o in gg.members
                         if o.name == m.name and o.dim == 1 and o is not m]
                if other:
                    a, b = m, other[0]
                    i = int(np.nonzero(a.unit >= 0)[0][0])
                    return a, b, i
    return None


@pytest.mark.parametrize("name", ["inception_concat", "unet_skip_concat", "fpn_neck"])
def test_check_catches_a_corrupted_index_mapping(name: str) -> None:
    case = ZOO[name]
    model = case.build()
    graph = comb(copy.deepcopy(model), case.inputs())
    assert check(model, case.inputs(), ratio=0.5, seed=0, graph=graph).ok
    # shift the unit mapping of a member that receives a concatenation: a wrong concat offset
    bad = copy.deepcopy(graph)
    bad.label_units = graph.label_units
    target = next(m for g in bad.prunable() for m in g.members
                  if m.kind == "param" and m.dim == 1 and len(m.unit) >= 4)
    target.unit = np.roll(target.unit, 1)
    rep = check(model, case.inputs(), ratio=0.5, seed=0, graph=bad)
    assert not rep.ok
    assert any("masked reference" in f or "failed" in f for f in rep.failures), rep.failures


def test_deps_json_roundtrip_and_fingerprint(tmp_path) -> None:
    case = ZOO["residual_blocks"]
    model = case.build()
    graph = comb(model, case.inputs())
    path = tmp_path / "deps.json"
    save_deps(graph, path)
    loaded = load_deps(path, model)
    assert [g.num_units for g in loaded.groups] == [g.num_units for g in graph.groups]
    assert all(np.array_equal(a.unit, b.unit) for ga, gb in zip(graph.groups, loaded.groups)
               for a, b in zip(ga.members, gb.members))
    plan = random_plan(loaded, 0.3)
    twin = copy.deepcopy(model)
    cut_(twin, loaded, plan)
    assert run_forward(twin, case.inputs(), None)[0].shape == run_forward(model, case.inputs(), None)[0].shape
    other = ZOO["conv_bn_relu_chain"].build()
    with pytest.raises(ValueError, match="another architecture"):
        load_deps(path, other)


def test_bad_plans_are_refused() -> None:
    case = ZOO["conv_bn_relu_chain"]
    model = case.build()
    graph = comb(model, case.inputs())
    g = graph.prunable()[0]
    blocked = next(x for x in graph.groups if not x.prunable)
    with pytest.raises(ValueError, match="valid units"):
        cut_(model, graph, {g.id: [g.num_units]})
    with pytest.raises(ValueError, match="at least one must stay"):
        cut_(model, graph, {g.id: list(range(g.num_units))})
    with pytest.raises(ValueError, match="not prunable"):
        cut_(model, graph, {blocked.id: [0]})
    with pytest.raises(ValueError, match="graph has groups"):
        cut_(model, graph, {999: [0]})


class _Weird(nn.Module):
    """Uses an operator the tracer has no rule for (a matrix inverse over channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        m = y.T @ y + torch.eye(4)
        return self.head(y @ torch.linalg.inv(m))


def test_unknown_operator_blocks_instead_of_guessing() -> None:
    graph = comb(_Weird(), (torch.randn(6, 4),))
    group = next(g for g in graph.groups if any(m.name == "a.weight" and m.dim == 0 for m in g.members))
    assert not group.prunable
    assert "no propagation rule" in group.reason or "unlabelled" in group.reason
    assert graph.notes["unknown_ops"]
