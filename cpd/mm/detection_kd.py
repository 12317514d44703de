"""Distillation of a dense detector's head outputs and neck features: the :class:`~cpd.mm.distiller.Distiller`'s
detection terms.

A dense detector (RetinaNet, FCOS, ATSS, GFL, ...) gives, per feature level, class scores and box outputs
(:meth:`cpd.mm.tasks.detection.Detection.distill_forward`).  The options, ``Distiller(detection_kd=...)``::

    detection_kd = dict(
        cls='auto',          # 'auto': 'bce' for per-class sigmoid heads, 'kl' for softmax heads
        box='masked_l2',     # 'masked_l2', 'l2' (every prior) or None (no box term)
        box_weight=1.0,      # weight of the box term
        conf_thr=0.5,        # 'masked_l2': priors where the teacher's best class probability reaches this
        neck_weight=0.0)     # > 0: MSE between the neck's maps, through a 1x1 connector per level

The losses (formulas in :mod:`cpd.distill.dense`), each averaged over the levels:

- ``loss_kd = alpha * KD_cls`` at the distiller's temperature;
- ``loss_kd_box = alpha * box_weight * KD_box`` (the mask is the teacher's confidence, at ``T = 1``);
- ``loss_kd_neck = neck_weight * mean_l MSE(connector_l(student_l), teacher_l)``.

Connectors: pruning narrows the neck (an FPN's output channels are one group shared by every level), so
the student's maps can have fewer channels than the teacher's.  Each level gets a learnable 1x1 convolution
from the student's width to the teacher's, identity-initialised where the widths are equal.  They belong to
the distiller, not to the student: the pruned-model files (which hold the student) drop them.  They are
built for the widths the student has when the distiller is built; a student cut in place later (the
PruningHook's cut with ``continue_finetune=True``) no longer fits them, and the loss says so: distil such a
student in a run of its own (``student=dict(type='PrunedModel', checkpoint=...)``), or keep ``neck_weight=0``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cpd.distill import dense_cls_kd_loss, masked_box_loss, teacher_confidence
from cpd.mm.tasks.base import DistillOutputs

CLS_LOSSES = ("auto", "bce", "kl")
BOX_LOSSES = ("masked_l2", "l2", None)
DEFAULTS: dict[str, Any] = {"cls": "auto", "box": "masked_l2", "box_weight": 1.0, "conf_thr": 0.5, "neck_weight": 0.0}


def detection_kd_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``detection_kd`` options and fill in the defaults.

    Args:
        options: None (the defaults) or a dict with keys among :data:`DEFAULTS`.

    Returns:
        The full options.

    Raises:
        ValueError: an unknown key or a bad value (the message names it and what is allowed).
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or set(options) - set(DEFAULTS):
        raise ValueError(f"Distiller: detection_kd={options!r} must be None or a dict with keys {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **dict(options)}
    if out["cls"] not in CLS_LOSSES:
        raise ValueError(f"Distiller: detection_kd.cls={out['cls']!r} must be one of {CLS_LOSSES}")
    if out["box"] not in BOX_LOSSES:
        raise ValueError(f"Distiller: detection_kd.box={out['box']!r} must be one of {BOX_LOSSES}")
    for key, low in (("box_weight", 0.0), ("neck_weight", 0.0), ("conf_thr", 0.0)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            raise ValueError(f"Distiller: detection_kd.{key}={value!r} must be a number >= {low:g}")
    if out["conf_thr"] > 1:
        raise ValueError(f"Distiller: detection_kd.conf_thr={out['conf_thr']!r} must be a probability in [0, 1]")
    return out


def build_connectors(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> nn.ModuleList:
    """One 1x1 convolution per level from the student's channels to the teacher's (identity where they match).

    Args:
        student_feats: the student's neck maps ``(N, C_s, H, W)`` per level.
        teacher_feats: the teacher's, ``(N, C_t, H, W)``.

    Returns:
        The connectors.

    Raises:
        ValueError: the two necks have different numbers of levels.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"Distiller: the student's neck gives {len(student_feats)} levels, the teacher's "
                         f"{len(teacher_feats)}")
    connectors = nn.ModuleList()
    for s, t in zip(student_feats, teacher_feats):
        conv = nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1)
        if s.shape[1] == t.shape[1]:  # start by comparing the maps as they are
            with torch.no_grad():
                conv.weight.copy_(torch.eye(s.shape[1])[:, :, None, None])
                conv.bias.zero_()
        connectors.append(conv)
    return connectors


def detection_kd_losses(student: DistillOutputs, teacher: DistillOutputs, options: Mapping[str, Any],
                        temperature: float, alpha: float, connectors: nn.ModuleList | None = None
                        ) -> dict[str, torch.Tensor]:
    """The detection KD terms (see the module docstring).

    Args:
        student: the student's :meth:`~cpd.mm.tasks.Task.distill_forward` outputs.
        teacher: the teacher's, computed without gradients.
        options: checked by :func:`detection_kd_options`.
        temperature: ``T`` of the class term.
        alpha: weight of the class and box terms.
        connectors: the neck connectors when ``neck_weight > 0``.

    Returns:
        ``loss_kd``, and ``loss_kd_box`` / ``loss_kd_neck`` when those terms are on.

    Raises:
        ValueError: the two heads give different levels or shapes, or the student's neck no longer fits
            the connectors.
    """
    if len(student.logits) != len(teacher.logits) or len(student.boxes) != len(teacher.boxes):
        raise ValueError(f"Distiller: the student's head gives {len(student.logits)} levels, the teacher's "
                         f"{len(teacher.logits)}")
    kind = options["cls"]
    sigmoid = teacher.sigmoid if kind == "auto" else kind == "bce"
    priors = teacher.num_priors
    cls = [dense_cls_kd_loss(s, t, temperature, priors, sigmoid) for s, t in zip(student.logits, teacher.logits)]
    losses = {"loss_kd": alpha * torch.stack(cls).mean()}
    if options["box"] is not None and student.boxes:
        boxes = []
        for s, t, t_cls in zip(student.boxes, teacher.boxes, teacher.logits):
            mask = None
            if options["box"] == "masked_l2":
                mask = teacher_confidence(t_cls, priors, teacher.sigmoid) >= options["conf_thr"]
            boxes.append(masked_box_loss(s, t, priors, mask))
        losses["loss_kd_box"] = alpha * options["box_weight"] * torch.stack(boxes).mean()
    if options["neck_weight"] > 0:
        if connectors is None:
            raise ValueError("Distiller: detection_kd.neck_weight > 0 needs the neck connectors")
        terms = []
        for level, (s, t, conv) in enumerate(zip(student.features, teacher.features, connectors)):
            if s.shape[1] != conv.in_channels:
                raise ValueError(
                    f"Distiller: the student's neck level {level} has {s.shape[1]} channels, its connector "
                    f"takes {conv.in_channels} (the student was cut after the distiller was built); distil the "
                    "cut student in a run of its own (student=dict(type='PrunedModel', ...)) or set "
                    "detection_kd.neck_weight=0")
            terms.append(nn.functional.mse_loss(conv(s.float()), t.detach().float()))
        losses["loss_kd_neck"] = options["neck_weight"] * torch.stack(terms).mean()
    return losses
