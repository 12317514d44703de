"""Calibration scoring: a batch of other data adds to the importance and leaves training's state as it was."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpd.prune import PruneConfig, Pruner
from cpd.prune.calibration import accumulate_on

pytestmark = pytest.mark.usefixtures("one_thread")


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 8, 8, generator=gen), torch.randint(0, 4, (6,), generator=gen)


def pruner_of(model: nn.Module, criterion: str) -> Pruner:
    return Pruner(model, (torch.randn(2, 3, 8, 8),), PruneConfig(criterion=criterion, interval=1, thresholds=(0.5,)))


def sums(pruner: Pruner) -> dict[str, dict[int, torch.Tensor]]:
    s = pruner.saliency
    return {"first": s.first, "second": s.second, "joint": s.joint, "diagonal": s.diagonal}


@pytest.mark.parametrize("criterion", ["obd", "taylor", "group_fisher"])
def test_calibration_batch_scores_like_a_plain_backward_and_keeps_training_state(criterion: str) -> None:
    model = net()
    model.train()
    x, y = batch(1)
    xc, yc = batch(2)
    twin = copy.deepcopy(model)
    pruner, plain = pruner_of(model, criterion), pruner_of(twin, criterion)
    F.cross_entropy(model(x), y).backward()  # a training batch's gradients, waiting for the optimiser
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    stats = {n: b.clone() for n, b in model.named_buffers()}

    loss = accumulate_on(pruner, lambda: F.cross_entropy(model(xc), yc))

    ref = F.cross_entropy(twin(xc), yc)  # the same calibration batch, scored the plain way
    ref.backward()
    plain.accumulate()
    assert loss == pytest.approx(float(ref.detach()))
    assert pruner.saliency.batches == plain.saliency.batches == 1
    for kind, by_group in sums(plain).items():
        for gid, value in by_group.items():
            assert torch.allclose(sums(pruner)[kind][gid], value, rtol=1e-6, atol=1e-12), (kind, gid)
    assert any(float(v.abs().sum()) > 0 for v in plain.saliency.first.values())
    for n, p in model.named_parameters():  # training's gradients and norm statistics are back
        assert torch.equal(p.grad, grads[n]), n
    for n, b in model.named_buffers():
        assert torch.equal(b, stats[n]), n
    assert not all(torch.equal(b, dict(twin.named_buffers())[n]) for n, b in model.named_buffers())


def test_parameters_without_gradient_stay_without() -> None:
    model = net()
    pruner = pruner_of(model, "obd")
    xc, yc = batch(3)
    accumulate_on(pruner, lambda: F.cross_entropy(model(xc), yc))
    assert all(p.grad is None for p in model.parameters())
    assert pruner.saliency.batches == 1


def test_a_loss_that_is_no_scalar_is_refused_in_one_line() -> None:
    model = net()
    pruner = pruner_of(model, "obd")
    xc, _ = batch(4)
    with pytest.raises(ValueError, match=r"scalar tensor .* shape \(6, 4\)"):
        accumulate_on(pruner, lambda: model(xc))
    with pytest.raises(ValueError, match="got float"):
        accumulate_on(pruner, lambda: 1.0)


def test_a_criterion_without_gradients_only_counts_the_batch() -> None:
    model = net()
    pruner = pruner_of(model, "magnitude")
    calls = []
    assert accumulate_on(pruner, lambda: calls.append(1)) is None
    assert calls == [] and pruner.saliency.batches == 1


def test_the_random_draws_and_a_wider_training_model_are_kept() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, 4))
    whole = nn.ModuleDict({"student": student, "connector": nn.Linear(4, 4)})  # a distiller holds connectors so
    pruner = pruner_of(student, "obd")
    x, y = batch(5)
    xc, yc = batch(6)

    def loss_of(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(whole["connector"](student(inputs)), labels)

    loss_of(x, y).backward()
    grads = {n: p.grad.clone() for n, p in whole.named_parameters()}
    generator = torch.get_rng_state()
    accumulate_on(pruner, lambda: loss_of(xc, yc), keep=whole)
    assert torch.equal(torch.get_rng_state(), generator)  # dropout's draws: training's next mask is unchanged
    for n, p in whole.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
