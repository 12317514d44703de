"""Pruning over every pattern network: masked == materialized, save/load round trip, exact resume, gradients."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from cpd import load_deps, save_deps
from cpd.combing import comb
from cpd.graph.forward import run_forward
from cpd.prune import PruneConfig, Pruner, load_pruned, save_pruned
from zoo import ZOO, ZooCase


CASES = pytest.mark.parametrize("case", list(ZOO.values()), ids=list(ZOO))
# token_round_trip reshapes with a width read from another tensor; the cut guard freezes those groups
pytestmark = [pytest.mark.filterwarnings("ignore:group .* is frozen:UserWarning"), pytest.mark.usefixtures("one_thread")]
CONFIG = PruneConfig(criterion="hessian", interval=2, thresholds=(0.15, 0.3), step_fraction=0.1, round_to=2)
ITERS = 8  # four pruning steps


def batch(case: ZooCase, it: int) -> tuple[torch.Tensor, ...]:
    """Random inputs for iteration ``it``, the same in every run."""
    gen = torch.Generator().manual_seed(1000 + it)
    return tuple(torch.randn(x.shape, generator=gen) for x in case.inputs())


def train(model: nn.Module, pruner: Pruner, opt: torch.optim.Optimizer, case: ZooCase, start: int, stop: int) -> None:
    """A plain loop: forward, backward, accumulate, optimizer step, pruner step."""
    model.train()
    for it in range(start, stop):
        out = model(*batch(case, it))
        loss = out.float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        pruner.accumulate()
        opt.step()
        pruner.step()


def start_run(case: ZooCase, graph=None) -> tuple[nn.Module, Pruner, torch.optim.Optimizer]:
    model = case.build()
    pruner = Pruner(model, case.inputs(), CONFIG, graph=graph)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    return model, pruner, opt


def outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return run_forward(model, inputs, None)


@functools.lru_cache(maxsize=None)
def reference_run(name: str) -> tuple[nn.Module, Pruner, dict]:
    """One uninterrupted run per case (shared by the tests below), with the plan it ended on."""
    case = ZOO[name]
    model, pruner, opt = start_run(case)
    train(model, pruner, opt, case, 0, ITERS)
    return model, pruner, pruner.plan()


def live_grad(pruner: Pruner, name: str, grad: torch.Tensor) -> torch.Tensor:
    """The slices of ``grad`` that the cut model keeps."""
    for dim in range(grad.dim()):
        live = pruner.masks.live(name, dim)
        if live is not None:
            grad = grad.index_select(dim, torch.nonzero(live).flatten())
    return grad


@CASES
def test_masked_equals_materialized_and_round_trips(case: ZooCase, tmp_path: Path) -> None:
    model, pruner, plan = reference_run(case.name)
    assert pruner.masks.removed(), "some units must have been removed"
    assert len(pruner.history) == ITERS // CONFIG.interval or pruner.done
    assert all(e.batches == CONFIG.interval for e in pruner.history)
    probe = batch(case, 99)
    masked = outputs(model, probe)
    pruned, plan = pruner.export()
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in case.build().parameters())
    for a, b in zip(masked, outputs(pruned, probe), strict=True):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= 1e-5 * max(float(a.abs().max()), 1e-12)
    assert pruner.verify() <= 1e-5

    # gradients flow: the live weights get the cut model's gradients
    twin = copy.deepcopy(model)  # keeps the live-statistics norms
    grads = []
    for net in (twin, copy.deepcopy(pruned)):
        net.train()
        net(*probe).square().mean().backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    for name, g in grads[0].items():
        g, ref = live_grad(pruner, name, g), grads[1][name]
        assert g.shape == ref.shape, name
        assert torch.allclose(g, ref, rtol=1e-4, atol=1e-6 * max(float(ref.abs().max()), 1.0)), name

    save_pruned(pruned, plan, tmp_path / "pruned.pt")
    loaded = load_pruned(case.build(), tmp_path / "pruned.pt")
    for a, b in zip(outputs(pruned, probe), outputs(loaded, probe), strict=True):
        assert torch.equal(a, b)


@CASES
def test_resume_gives_the_same_plan(case: ZooCase, tmp_path: Path) -> None:
    _, reference, plan = reference_run(case.name)
    save_deps(reference.graph, tmp_path / "deps.json")

    model, pruner, opt = start_run(case, graph=load_deps(tmp_path / "deps.json"))
    train(model, pruner, opt, case, 0, 3)  # mid-interval: one batch is accumulated
    assert pruner.saliency.batches == 1
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "pruner": pruner.state_dict()},
               tmp_path / "ckpt.pt")
    del model, pruner, opt

    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model, pruner, opt = start_run(case, graph=load_deps(tmp_path / "deps.json"))
    pruner.load_state_dict(ckpt["pruner"])
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    train(model, pruner, opt, case, 3, ITERS)
    assert pruner.plan()["removed"] == plan["removed"]
    assert [e.to_dict() for e in pruner.history] == [e.to_dict() for e in reference.history]


@pytest.mark.parametrize("name", ["residual_blocks", "vit_torch_mha", "convnext_layer_scale"])
def test_materialize_in_place_matches_the_masked_model(name: str) -> None:
    case = ZOO[name]
    model, pruner, opt = start_run(case)
    train(model, pruner, opt, case, 0, 4)
    probe = batch(case, 99)
    masked = outputs(model, probe)
    plan = pruner.materialize_()
    assert plan["removed"]
    for a, b in zip(masked, outputs(model, probe), strict=True):
        assert float((a - b).abs().max()) <= 1e-5 * max(float(a.abs().max()), 1e-12)
    with pytest.raises(RuntimeError, match="materialized"):
        pruner.step()
    # the pruned model trains with a fresh optimizer
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(*probe).square().mean().backward()
    opt.step()


def test_comb_verification_refuses_groups_tied_by_code() -> None:
    """``c`` of ``reshape(b, c, h, w)`` comes from the patch conv: comb's unequal-cut probe finds the tie."""
    case = ZOO["token_round_trip"]
    graph = comb(case.build(), case.inputs())
    tied = [g for g in graph.groups if "breaks the forward" in g.reason]
    assert len(tied) >= 2


def test_guard_freezes_groups_whose_cut_breaks_the_model() -> None:
    """Second line of defence: with comb's verification skipped, the pruner's guard finds the same tie."""
    case = ZOO["token_round_trip"]
    model, pruner, opt = start_run(case, graph=comb(case.build(), case.inputs(), verify=False))
    with pytest.warns(UserWarning, match="is frozen: cutting it breaks the forward"):
        train(model, pruner, opt, case, 0, ITERS)
    assert pruner.frozen and all("breaks the forward" in why for why in pruner.frozen.values())
    assert pruner.twin.breaks(pruner.removed()) == ""  # what is removed still cuts into a working model
    assert pruner.verify() <= 1e-5
