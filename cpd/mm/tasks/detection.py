"""Object detection: mmdet's single-stage detectors (RetinaNet, FCOS, ATSS, GFL, YOLOX, RTMDet, ...).

Training computes ``bbox_head(extract_feat(x))`` (backbone, neck, then the head's outputs for every
feature level: class scores, box predictions, and objectness or centerness where the head has them)
and a loss on them; inference decodes the same outputs and runs NMS, a compiled op here. Both
forwards therefore return the head's raw outputs, before NMS.

Two-stage detectors (an RPN then RoI heads) and DETR-style ones need data samples, proposals from
NMS and RoIAlign in their forward: they are refused with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cpd.mm.tasks.base import Task, flat_tensors


class Detection(Task):
    """mmdet single-stage detectors; example batches default to 320x320."""

    name = "detection"
    scope = "mmdet"
    package = "mmdet.models"
    registry_module = "mmdet.registry"
    fallback_size = (320, 320)

    def train_forward(self, model: nn.Module, inputs: torch.Tensor) -> list[Any]:
        """The head's outputs: one list per kind (class scores first), one tensor per level.

        Raises:
            TypeError: ``model`` is not a single-stage detector (see the module docstring).
        """
        head = getattr(model, "bbox_head", None)
        if not callable(getattr(model, "extract_feat", None)) or not isinstance(head, nn.Module):
            raise TypeError(
                f"{type(model).__name__} is not a single-stage detector (no bbox_head on its "
                "features): two-stage and DETR-style detectors need proposals from NMS, RoIAlign "
                "or data samples in their forward, which cannot be traced here"
            )
        outs = head(model.extract_feat(inputs))
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return [flat_tensors(kind, f"bbox_head.forward[{i}]") for i, kind in enumerate(outs)]

    def logits(self, model: nn.Module, outputs: Sequence[Any]) -> list[torch.Tensor]:
        """The class scores of every level (the head's first output; YOLOv3's maps hold boxes too)."""
        return list(outputs[0])

    def infer_forward(self, model: nn.Module, inputs: torch.Tensor) -> list[Any]:
        """The head's raw outputs for every level, as inference feeds them to the box decoder."""
        return self.train_forward(model, inputs)
