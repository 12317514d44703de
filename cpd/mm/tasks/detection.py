"""Object detection: mmdet's single-stage detectors (RetinaNet, FCOS, ATSS, GFL, YOLOX, RTMDet, ...).

Training computes ``bbox_head(extract_feat(x))`` (backbone, neck, then the head's outputs for every
feature level: class scores, box predictions, and objectness or centerness where the head has them)
and a loss on them; inference decodes the same outputs and runs NMS, a compiled op here. Both
forwards therefore return the head's raw outputs, before NMS.

Two-stage detectors (an RPN then RoI heads) and DETR-style ones need data samples, proposals from
NMS and RoIAlign in their forward: they are refused with a reason.

For distillation (:meth:`Detection.distill_forward`) the logits are the class scores of every level,
the boxes the box outputs of every level (the head's first two outputs; a third, centerness or
objectness, is not distilled), the features the neck's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.config import Config
from torch import nn

from cpd.mm.tasks.base import DistillOutputs, Size, Task, flat_tensors


class Detection(Task):
    """mmdet single-stage detectors; example batches default to 320x320."""

    name = "detection"
    scope = "mmdet"
    package = "mmdet.models"
    registry_module = "mmdet.registry"
    fallback_size = (320, 320)

    def declared_size(self, cfg_or_model: Config | nn.Module) -> Size | None:
        """The ``size`` of a ``BatchFixedSizePad`` batch augment when the preprocessor has one.

        mmdet's ``DetDataPreprocessor`` has no ``size`` of its own; a fixed pad says what every batch is.
        """
        if isinstance(cfg_or_model, nn.Module):
            augments = getattr(getattr(cfg_or_model, "data_preprocessor", None), "batch_augments", None) or []
            sizes = [getattr(a, "size", None) for a in augments if type(a).__name__ == "BatchFixedSizePad"]
        else:
            augments = cfg_or_model.get("model", {}).get("data_preprocessor", {}).get("batch_augments") or []
            sizes = [a.get("size") for a in augments if a.get("type") in ("BatchFixedSizePad", "mmdet.BatchFixedSizePad")]
        return tuple(sizes[0]) if sizes and sizes[0] else None

    def train_forward(self, model: nn.Module, inputs: torch.Tensor) -> list[Any]:
        """The head's outputs: one list per kind (class scores first), one tensor per level.

        Raises:
            TypeError: ``model`` is not a single-stage detector (see the module docstring).
        """
        return self._head_outputs(model, inputs)[1]

    def _head_outputs(self, model: nn.Module, inputs: torch.Tensor) -> tuple[Any, list[list[torch.Tensor]]]:
        """``(neck features, head outputs)``: see :meth:`train_forward`."""
        head = getattr(model, "bbox_head", None)
        if not callable(getattr(model, "extract_feat", None)) or not isinstance(head, nn.Module):
            raise TypeError(
                f"{type(model).__name__} is not a single-stage detector (no bbox_head on its "
                "features): two-stage and DETR-style detectors need proposals from NMS, RoIAlign "
                "or data samples in their forward, which cannot be traced here"
            )
        feats = model.extract_feat(inputs)
        outs = head(feats)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return feats, [flat_tensors(kind, f"bbox_head.forward[{i}]") for i, kind in enumerate(outs)]

    def logits(self, model: nn.Module, outputs: Sequence[Any]) -> list[torch.Tensor]:
        """The class scores of every level (the head's first output; YOLOv3's maps hold boxes too)."""
        return list(outputs[0])

    def infer_forward(self, model: nn.Module, inputs: torch.Tensor) -> list[Any]:
        """The head's raw outputs for every level, as inference feeds them to the box decoder."""
        return self.train_forward(model, inputs)

    def distill_forward(self, model: nn.Module, inputs: torch.Tensor, data_samples: Any = None
                        ) -> DistillOutputs:
        """The head's losses (what ``bbox_head.loss`` computes), class scores and boxes per level, the neck's maps.

        Raises:
            TypeError: ``model`` is not a single-stage detector, or its head has no ``loss_by_feat``.
        """
        feats, outs = self._head_outputs(model, inputs)
        head = model.bbox_head
        losses: dict[str, torch.Tensor] = {}
        if data_samples is not None:
            if not callable(getattr(head, "loss_by_feat", None)):
                raise TypeError(f"distilling a detector needs a dense head with loss_by_feat; "
                                f"{type(model).__name__} has {type(head).__name__}")
            from mmdet.models.utils import unpack_gt_instances

            gt_instances, gt_ignore, img_metas = unpack_gt_instances(data_samples)
            losses = dict(head.loss_by_feat(*outs, gt_instances, img_metas, gt_ignore))
        return DistillOutputs(losses, list(outs[0]), feats, boxes=list(outs[1]) if len(outs) > 1 else [],
                              num_priors=num_priors(head), sigmoid=bool(getattr(head, "use_sigmoid_cls", True)))


def num_priors(head: nn.Module) -> int:
    """Priors (anchors, or 1 point) per location of a dense head; the channels of its maps are grouped by them."""
    count = getattr(head, "num_base_priors", None)
    if count is None:
        generator = getattr(head, "prior_generator", None)
        bases = getattr(generator, "num_base_priors", None)
        count = bases[0] if isinstance(bases, (list, tuple)) and bases else 1
    return int(count)
