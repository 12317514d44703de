"""Knowledge-distillation losses for dense detectors (RetinaNet, FCOS, ATSS, GFL, ...).

A dense head predicts, on every feature level, ``A`` priors (anchors, or one point) per location, each
with ``C`` class scores and ``K`` box numbers: maps ``(N, A*C, H, W)`` and ``(N, A*K, H, W)``, channels
grouped by prior.  The teacher's maps have the same shape as the student's: pruning keeps a head's
output layers whole.

``dense_cls_kd_loss``, classification, softened at temperature ``T`` and scaled by ``T^2`` as
:func:`cpd.distill.losses.kd_kl_loss` is.  Heads that score each class with a sigmoid (focal-loss heads)
get a binary KL per class::

    KD_cls = T^2 * mean_{n,a,c,h,w} [ q log(q / p) + (1 - q) log((1 - q) / (1 - p)) ],
             q = sigmoid(t / T), p = sigmoid(s / T)

(the binary cross-entropy against the teacher's soft targets minus the teacher's own entropy, so it is
0 exactly when the student agrees with the teacher); softmax heads get the KL between the two class
distributions of every prior, averaged over priors and locations.

``masked_box_loss``, box regression: the squared difference of the raw box outputs, summed over the
``K`` numbers of a prior and averaged over the priors where the teacher is confident::

    KD_box = sum_{n,a,h,w} m * sum_k (s_k - t_k)^2 / max(1, sum m),   m = [max_c q_c >= thr]

With no mask (``thr`` None) every prior counts (plain L2).  Regressing to the teacher's boxes on its
background would teach the student noise: only its confident priors carry a box worth copying.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cpd.distill.losses import kd_kl_loss


def _priors(x: torch.Tensor, num_priors: int, what: str) -> torch.Tensor:
    """``(N, A*K, H, W)`` -> ``(N, A, K, H, W)``.

    Raises:
        ValueError: not a 4-D map, or channels not a multiple of ``num_priors``.
    """
    if isinstance(num_priors, bool) or not isinstance(num_priors, int) or num_priors < 1:
        raise ValueError(f"num_priors must be a positive integer, got {num_priors!r}")
    if x.dim() != 4 or x.shape[1] % num_priors:
        raise ValueError(f"{what} must be an (N, A*K, H, W) map with A={num_priors} priors per location, "
                         f"got shape {tuple(x.shape)}")
    n, ch, h, w = x.shape
    return x.reshape(n, num_priors, ch // num_priors, h, w)


def _same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher {what} differ in shape: {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)} (a head's output layers must not be pruned)")


def dense_cls_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
                      num_priors: int = 1, sigmoid: bool = True) -> torch.Tensor:
    """KD on one level's class scores (see the module docstring for the formula).

    Args:
        student: ``(N, A*C, H, W)`` class logits.
        teacher: the teacher's, same shape; no gradient flows into it.
        temperature: ``T > 0``.
        num_priors: ``A``, priors per location (used by softmax heads, whose classes are grouped by prior).
        sigmoid: True for per-class sigmoid scores (binary KL), False for a softmax over each prior's classes.

    Returns:
        A scalar, 0 when ``student`` equals ``teacher``.

    Raises:
        ValueError: a temperature that is not positive, or maps that do not match.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    _same_shape(student, teacher, "class scores")
    teacher = teacher.detach()
    if not sigmoid:
        # (N, A, C, H, W) -> (N, C, A, H, W): kd_kl_loss takes the softmax over dim 1
        s, t = (_priors(x, num_priors, "class scores").transpose(1, 2) for x in (student, teacher))
        return kd_kl_loss(s, t, temperature)
    s, t = student.float() / temperature, teacher.float() / temperature
    q = torch.sigmoid(t)
    # log p = logsigmoid(s), log (1 - p) = logsigmoid(-s): stable for large logits
    kl = q * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - q) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean() * temperature ** 2


def teacher_confidence(scores: torch.Tensor, num_priors: int = 1, sigmoid: bool = True) -> torch.Tensor:
    """The teacher's highest class probability of every prior.

    Args:
        scores: ``(N, A*C, H, W)`` class logits.
        num_priors: ``A``.
        sigmoid: per-class sigmoid scores; else a softmax over each prior's classes, whose last class is
            the background (mmdet's softmax heads) and does not count.

    Returns:
        ``(N, A, H, W)`` probabilities in ``[0, 1]``.

    Raises:
        ValueError: ``scores`` is not a map of ``num_priors`` groups.
    """
    grouped = _priors(scores.detach().float(), num_priors, "class scores")
    probs = torch.sigmoid(grouped) if sigmoid else torch.softmax(grouped, dim=2)[:, :, :-1]
    return probs.amax(dim=2)


def masked_box_loss(student: torch.Tensor, teacher: torch.Tensor, num_priors: int = 1,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """L2 between the student's and the teacher's box outputs of one level, on the masked priors.

    Args:
        student: ``(N, A*K, H, W)`` box outputs.
        teacher: the teacher's, same shape; no gradient flows into it.
        num_priors: ``A``.
        mask: ``(N, A, H, W)`` weights (1 where the teacher is confident, see :func:`teacher_confidence`),
            or None for every prior.

    Returns:
        A scalar: the masked mean over priors of the squared error summed over the ``K`` numbers
        (0 when no prior is masked in).

    Raises:
        ValueError: maps or mask that do not match.
    """
    _same_shape(student, teacher, "box outputs")
    s, t = _priors(student.float(), num_priors, "box outputs"), _priors(teacher.detach().float(), num_priors,
                                                                          "box outputs")
    err = (s - t).pow(2).sum(dim=2)  # (N, A, H, W)
    if mask is None:
        return err.mean()
    if mask.shape != err.shape:
        raise ValueError(f"the box mask must have shape {tuple(err.shape)} (N, A, H, W), got {tuple(mask.shape)}")
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp(min=1.0)
