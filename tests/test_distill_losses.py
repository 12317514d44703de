"""Distillation losses (torch only): values, scaling, resizing, gradients and errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cpd.distill import affinity_loss, dense_cls_kd_loss, kd_kl_loss, masked_box_loss, teacher_confidence


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


# -- dense detectors ------------------------------------------------------------------------------------
def maps(seed: int, priors: int = 3, per: int = 5) -> torch.Tensor:
    return torch.randn(2, priors * per, 4, 6, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_dense_cls_kd_is_bce_to_the_soft_targets_minus_their_entropy(temperature: float) -> None:
    s, t = maps(0), maps(1)
    q = torch.sigmoid(t / temperature)
    bce = F.binary_cross_entropy_with_logits(s / temperature, q, reduction="mean")
    entropy = F.binary_cross_entropy_with_logits(t / temperature, q, reduction="mean")
    got = dense_cls_kd_loss(s, t, temperature, num_priors=3)
    assert float(got) == pytest.approx(float(bce - entropy) * temperature ** 2, rel=1e-5)
    assert float(dense_cls_kd_loss(t.clone(), t, temperature, num_priors=3)) == pytest.approx(0.0, abs=1e-6)
    assert float(dense_cls_kd_loss(s * 1e3, t, temperature)) < float("inf")  # saturated logits stay finite


def test_dense_cls_kd_of_softmax_heads_is_the_kl_over_each_priors_classes() -> None:
    s, t = maps(2), maps(3)
    per_prior = [kd_kl_loss(s[:, 5 * a:5 * a + 5], t[:, 5 * a:5 * a + 5], 2.0) for a in range(3)]
    got = dense_cls_kd_loss(s, t, 2.0, num_priors=3, sigmoid=False)
    assert float(got) == pytest.approx(float(sum(per_prior) / 3), rel=1e-5)


def test_masked_box_loss_averages_over_the_teachers_confident_priors_only() -> None:
    s, t = maps(4, per=4), maps(5, per=4)
    mask = teacher_confidence(maps(6), num_priors=3) >= 0.9
    assert mask.shape == (2, 3, 4, 6) and 0 < int(mask.sum()) < mask.numel()
    err = (s - t).reshape(2, 3, 4, 4, 6).pow(2).sum(dim=2)
    got = masked_box_loss(s, t, num_priors=3, mask=mask)
    assert float(got) == pytest.approx(float(err[mask].mean()), rel=1e-5)
    assert float(masked_box_loss(s, t, 3)) == pytest.approx(float(err.mean()), rel=1e-5)
    assert float(masked_box_loss(s, t, 3, torch.zeros_like(mask))) == 0.0
    s.requires_grad_(True)
    t.requires_grad_(True)
    masked_box_loss(s, t, 3, mask).backward()
    assert t.grad is None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("call,match", [
    (lambda: dense_cls_kd_loss(maps(0), maps(0)[:, :10]), "differ in shape"),
    (lambda: dense_cls_kd_loss(maps(0), maps(1), temperature=0), "temperature must be > 0"),
    (lambda: dense_cls_kd_loss(maps(0), maps(1), num_priors=4, sigmoid=False), "A=4 priors"),
    (lambda: masked_box_loss(maps(0), maps(1), 3, torch.ones(2, 3, 4)), "mask must have shape"),
    (lambda: teacher_confidence(maps(0), num_priors=0), "num_priors must be a positive integer"),
])
def test_dense_kd_bad_inputs(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
