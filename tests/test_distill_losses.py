"""Distillation losses (torch only): values, scaling, resizing, gradients and errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cpd.distill import affinity_loss, kd_kl_loss


def logits(seed: int, shape=(2, 5, 6, 7)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_kd_is_zero_for_the_teacher_itself_and_positive_otherwise() -> None:
    t = logits(0)
    assert float(kd_kl_loss(t.clone(), t, temperature=3.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_kl_loss(logits(1), t)) > 0


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_matches_the_pixelwise_kl_formula(temperature: float) -> None:
    s, t = logits(1), logits(2)
    p_t = F.softmax(t / temperature, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / temperature, dim=1))).sum(1).mean()
    assert float(kd_kl_loss(s, t, temperature)) == pytest.approx(float(kl) * temperature ** 2, rel=1e-5)


def test_kd_weight_averages_over_weighted_pixels() -> None:
    s, t = logits(1), logits(2)
    w = torch.zeros(2, 6, 7)
    w[0] = 1
    assert float(kd_kl_loss(s, t, weight=w)) == pytest.approx(float(kd_kl_loss(s[:1], t[:1])), rel=1e-5)


def test_kd_resizes_the_teacher_and_sends_gradients_to_the_student_only() -> None:
    s = logits(1, (2, 5, 8, 8)).requires_grad_()
    t = logits(2, (2, 5, 4, 4)).requires_grad_()
    kd_kl_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


@pytest.mark.parametrize("bad, match", [(dict(temperature=0.0), "temperature"),
                                        (dict(teacher_logits=logits(2, (2, 4, 6, 7))), "number of classes")])
def test_kd_bad_inputs(bad: dict, match: str) -> None:
    args = dict(student_logits=logits(1), teacher_logits=logits(2), temperature=1.0) | bad
    with pytest.raises(ValueError, match=match):
        kd_kl_loss(**args)


def test_affinity_ignores_channel_count_and_zero_channels() -> None:
    t = torch.randn(2, 8, 5, 5)
    s = torch.cat([t, torch.zeros(2, 3, 5, 5)], dim=1)  # a student with dead (zeroed) channels
    assert float(affinity_loss(s, t)) == pytest.approx(0.0, abs=1e-10)
    assert float(affinity_loss(torch.randn(2, 4, 5, 5), t)) > 0


def test_affinity_pools_large_maps_and_checks_inputs() -> None:
    s = torch.randn(1, 4, 64, 64, requires_grad=True)
    loss = affinity_loss(s, torch.randn(1, 6, 32, 32), pool=8)
    loss.backward()
    assert s.grad is not None
    with pytest.raises(ValueError, match="pool"):
        affinity_loss(s, s, pool=0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        affinity_loss(torch.randn(2, 4, 5), torch.randn(2, 4, 5))
