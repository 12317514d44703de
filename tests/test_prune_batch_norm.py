"""Batch norm re-estimation after a cut: the running statistics become those of the given batches, nothing else."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cpd.prune import PruneConfig, Pruner
from cpd.prune.batch_norm import batch_norms, reestimate_batch_norm_

pytestmark = pytest.mark.usefixtures("one_thread")


class Residual(nn.Module):
    """conv-BN, then a residual block whose two BNs share the stream's channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.head(torch.relu(s + self.block(s)))


def batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, 10, 10, generator=gen) * 2 + 1 for _ in range(n)]


def test_running_statistics_are_the_mean_of_the_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6, momentum=0.3))
    with torch.no_grad():  # statistics of other data already, as a trained model has
        model(torch.randn(8, 3, 10, 10) * 5 - 3)
    model.eval()
    xs = batches(4)
    with torch.no_grad():
        feats = [model[0](x) for x in xs]
    want_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    want_var = torch.stack([f.transpose(0, 1).reshape(6, -1).var(1, unbiased=True) for f in feats]).mean(0)
    weight = {n: p.clone() for n, p in model.named_parameters()}

    assert reestimate_batch_norm_(model, xs) == 4

    bn = model[1]
    assert torch.allclose(bn.running_mean, want_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, want_var, rtol=1e-5)
    assert int(bn.num_batches_tracked) == 4
    assert bn.momentum == 0.3 and not model.training and not bn.training
    assert all(torch.equal(p, weight[n]) for n, p in model.named_parameters())


def test_modes_are_put_back_module_by_module() -> None:
    model = Residual()
    model.eval()
    model.block[1].train()  # a mixed state (a frozen trunk with one norm training) stays as it was
    before = {n: m.training for n, m in model.named_modules()}
    reestimate_batch_norm_(model, batches(2))
    assert {n: m.training for n, m in model.named_modules()} == before


def test_masked_and_cut_models_reestimate_to_the_same_eval_outputs() -> None:
    torch.manual_seed(0)
    model = Residual()
    pruner = Pruner(model, (torch.randn(2, 3, 10, 10),), PruneConfig(criterion="magnitude", interval=1,
                                                                   thresholds=(0.4,)))
    pruner.step()
    assert pruner.masks.removed(), "the step should have removed units"
    cut, _ = pruner.export()
    probe = torch.randn(4, 3, 10, 10)
    model.eval()
    with torch.no_grad():
        stale = model(probe)
    fit = batches(5, seed=1)

    reestimate_batch_norm_(model, fit)
    reestimate_batch_norm_(cut, fit)

    model.eval()
    cut.eval()
    with torch.no_grad():
        masked_out, cut_out = model(probe), cut(probe)
    assert torch.allclose(masked_out, cut_out, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(stale, masked_out, atol=1e-3)  # the statistics did change


def test_forward_function_and_model_without_batch_norm() -> None:
    calls = []
    plain = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(1, 4))
    assert batch_norms(plain) == []
    assert reestimate_batch_norm_(plain, batches(3), forward=lambda m, b: calls.append(b)) == 0
    assert calls == []  # nothing to estimate: nothing runs

    model = Residual()
    seen = []
    assert reestimate_batch_norm_(model, [{"img": x} for x in batches(2)],
                                  forward=lambda m, b: seen.append(m(b["img"]))) == 2
    assert len(seen) == 2


def test_no_batch_and_failing_forward_leave_the_statistics_as_they_were() -> None:
    model = Residual()
    reestimate_batch_norm_(model, batches(2))
    saved = {n: b.clone() for n, b in model.named_buffers()}
    momenta = [m.momentum for m in batch_norms(model)]

    with pytest.raises(ValueError, match="got no batch"):
        reestimate_batch_norm_(model, [])

    def broken(m: nn.Module, b: torch.Tensor) -> None:
        m(b)
        raise RuntimeError("loader died")

    with pytest.raises(RuntimeError, match="loader died"):
        reestimate_batch_norm_(model, batches(2), forward=broken)
    assert all(torch.equal(b, saved[n]) for n, b in model.named_buffers())
    assert [m.momentum for m in batch_norms(model)] == momenta


class FrozenStem(Residual):
    """``train()`` leaves the stem's norm in eval mode, as a backbone's ``norm_eval=True`` does."""

    def train(self, mode: bool = True) -> FrozenStem:
        super().train(mode)
        self.stem[1].eval()
        return self


def test_norms_that_training_keeps_frozen_keep_their_statistics() -> None:
    model = FrozenStem()
    frozen = model.stem[1]
    with torch.no_grad():
        frozen.running_mean.fill_(0.5)
        frozen.running_var.fill_(2.0)
    before = {n: b.clone() for n, b in frozen.named_buffers()}
    assert reestimate_batch_norm_(model, batches(2)) == 2
    assert all(torch.equal(b, before[n]) for n, b in frozen.named_buffers())
    assert int(model.block[1].num_batches_tracked) == 2  # the others were re-estimated

    all_frozen = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    all_frozen.train = lambda mode=True: all_frozen  # every norm stays in eval mode: nothing to estimate
    calls = []
    assert reestimate_batch_norm_(all_frozen, [], forward=lambda m, b: calls.append(b)) == 0
