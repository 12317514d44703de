"""Distill: losses that let a pruned student learn from its unpruned teacher (torch only).

The mmengine model that wraps a student and a frozen teacher is :class:`cpd.mm.distiller.Distiller`.
"""
from cpd.distill.dense import dense_cls_kd_loss, masked_box_loss, teacher_confidence
from cpd.distill.losses import affinity_loss, kd_kl_loss

__all__ = ["affinity_loss", "dense_cls_kd_loss", "kd_kl_loss", "masked_box_loss", "teacher_confidence"]
