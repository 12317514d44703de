"""Knowledge-distillation losses for dense prediction.

``kd_kl_loss``: the pixel-wise KL divergence between the teacher's and the student's class
distributions softened at temperature ``T`` (Hinton et al.), averaged over pixels and scaled by ``T^2``
so that its gradient keeps the same size whatever ``T``::

    KD = T^2 * mean_{n, h, w} sum_c p_t(c) * (log p_t(c) - log p_s(c)),   p = softmax(logits / T)

``affinity_loss``: a feature loss that does not care how many channels either side has, so it keeps
working while the student's channels are pruned: the cosine similarity between every pair of spatial
positions of a feature map (an ``HW x HW`` affinity matrix, after average pooling to at most
``pool x pool`` positions) is computed for both networks, and their mean squared difference is the loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_logits(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The teacher's logits resized (bilinearly) to the student's spatial size.

    Raises:
        ValueError: not ``(N, C, ...)`` tensors of the same batch and class count.
    """
    if student.dim() < 2 or teacher.dim() != student.dim():
        raise ValueError(f"logits must be (N, C, ...) tensors of the same rank; got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(f"student and teacher logits must have the same batch size and number of classes; "
                         f"got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if student.shape[2:] != teacher.shape[2:]:
        teacher = F.interpolate(teacher, size=student.shape[2:], mode="bilinear", align_corners=False)
    return teacher


def kd_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise KL divergence from the teacher's softened distribution to the student's.

    Args:
        student_logits: ``(N, C, H, W)`` (any number of trailing dims).
        teacher_logits: ``(N, C, H', W')``; resized to the student's size when it differs.  No gradient
            flows into it.
        temperature: ``T > 0``.
        weight: optional per-pixel weight ``(N, H, W)`` (e.g. 0 on ignored pixels); the mean is then a
            weighted mean.

    Returns:
        A scalar: ``T^2`` times the (weighted) mean over pixels of ``KL(p_teacher || p_student)``.

    Raises:
        ValueError: a temperature that is not positive, or logits that do not match.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    teacher = _check_logits(student_logits, teacher_logits.detach())
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    if weight is None:
        loss = kl.mean()
    else:
        w = weight.to(kl.dtype)
        loss = (kl * w).sum() / w.sum().clamp(min=1e-12)
    return loss * temperature ** 2


def _affinity(feat: torch.Tensor, pool: int) -> torch.Tensor:
    if feat.dim() != 4:
        raise ValueError(f"affinity_loss takes (N, C, H, W) feature maps, got shape {tuple(feat.shape)}")
    h, w = feat.shape[2:]
    if h > pool or w > pool:
        feat = F.adaptive_avg_pool2d(feat, (min(h, pool), min(w, pool)))
    flat = F.normalize(feat.float().flatten(2), dim=1)  # (N, C, P), unit vectors per position
    return flat.transpose(1, 2) @ flat  # (N, P, P)


def affinity_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, pool: int = 16) -> torch.Tensor:
    """Mean squared difference of the spatial self-similarity of two feature maps.

    Args:
        student_feat: ``(N, C_s, H, W)``.
        teacher_feat: ``(N, C_t, H', W')``; no gradient flows into it.  Channel counts may differ.
        pool: positions are average-pooled to at most ``pool x pool`` first (the matrix is ``P x P``).

    Returns:
        A scalar.

    Raises:
        ValueError: not 4-D maps, different batch sizes, or a pool that is not a positive integer.
    """
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool must be a positive integer, got {pool!r}")
    if student_feat.shape[0] != teacher_feat.shape[0]:
        raise ValueError(f"student and teacher features have different batch sizes: {tuple(student_feat.shape)} "
                         f"and {tuple(teacher_feat.shape)}")
    teacher_feat = teacher_feat.detach()
    if teacher_feat.dim() == 4 and student_feat.dim() == 4 and teacher_feat.shape[2:] != student_feat.shape[2:]:
        teacher_feat = F.interpolate(teacher_feat, size=student_feat.shape[2:], mode="bilinear", align_corners=False)
    return F.mse_loss(_affinity(student_feat, pool), _affinity(teacher_feat, pool))
