"""Semantic segmentation: mmsegmentation's ``EncoderDecoder`` and ``CascadeEncoderDecoder``.

Training runs the decode head(s) and every auxiliary head, so the trace follows
:func:`cpd.mm.entry.seg_forward`. Inference runs the decode head only (the last one of a cascade,
fed by the ones before it), as ``model(inputs, mode='tensor')`` does: the auxiliary heads never
reach an exported graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cpd.mm.entry import needs_data_samples, seg_forward, shape_samples
from cpd.mm.tasks.base import DistillOutputs, Task, flat_tensors


class Segmentation(Task):
    """mmseg segmentors; example batches default to the data preprocessor's size, else 512x512."""

    name = "segmentation"
    scope = "mmseg"
    package = "mmseg.models"
    registry_module = "mmseg.registry"
    fallback_size = (512, 512)

    #: decode heads' logits (in order), then every auxiliary head's; the function itself, so that
    #: callers comparing forwards (``forward_fn is seg_forward``) keep working
    train_forward = staticmethod(seg_forward)

    def logits(self, model: nn.Module, outputs: Sequence[Any]) -> list[torch.Tensor]:
        """The decode heads' logits: one per decode head, the auxiliary heads left out."""
        head = model.decode_head
        count = len(head) if isinstance(head, nn.ModuleList) else 1
        return list(outputs[:count])

    def infer_forward(self, model: nn.Module, inputs: torch.Tensor) -> list[Any]:
        """The logits inference computes: the (last) decode head's, at the head's resolution."""
        feats = model.extract_feat(inputs)
        head = model.decode_head
        if not isinstance(head, nn.ModuleList) and needs_data_samples(head):
            return [mask_logits(*head.forward(feats, shape_samples(inputs)), size=inputs.shape[-2:])]
        if not isinstance(head, nn.ModuleList):
            return flat_tensors(head.forward(feats), "decode_head.forward")
        out = head[0].forward(feats)
        for later in head[1:]:
            out = later.forward(feats, out)
        return flat_tensors(out, f"decode_head[{len(head) - 1}].forward")

    def distill_forward(self, model: nn.Module, inputs: torch.Tensor, data_samples: Any = None
                        ) -> DistillOutputs:
        """The decode head's losses (``decode.*``) and every auxiliary head's, the decode logits, the features.

        Raises:
            ValueError: a cascade segmentor (several decode heads).
        """
        from mmseg.utils import add_prefix

        head = model.decode_head
        if isinstance(head, nn.ModuleList):
            raise ValueError("cascade segmentors (several decode heads) cannot be distilled")
        feats = model.extract_feat(inputs)
        logits = head.forward(feats)
        losses: dict[str, torch.Tensor] = {}
        if data_samples is not None:
            losses = add_prefix(head.loss_by_feat(logits, data_samples), "decode")
            if model.with_auxiliary_head:
                losses.update(model._auxiliary_head_forward_train(feats, data_samples))
        return DistillOutputs(losses, [logits], feats)


def mask_logits(cls_scores: Any, mask_preds: Any, size: Sequence[int] | None = None) -> torch.Tensor:
    """Per-class logits of a mask classification head (MaskFormer, Mask2Former), as mmseg's predict makes them:
    the last decoder layer's class probabilities (the no-object class dropped) weighting its masks' sigmoids.

    Args:
        cls_scores: ``(N, Q, C + 1)`` class scores, or them per decoder layer (a list, or stacked first).
        mask_preds: ``(N, Q, h, w)`` mask logits, or them per decoder layer (a list, or stacked first).
        size: ``(H, W)`` the mask logits are resized to (bilinear) before the sigmoid, as mmseg does at the
            input size; None: left at the masks' resolution.

    Returns:
        ``(N, C, H, W)``.
    """
    if isinstance(cls_scores, (list, tuple)) or cls_scores.dim() == 4:
        cls_scores, mask_preds = cls_scores[-1], mask_preds[-1]
    if size is not None:
        mask_preds = F.interpolate(mask_preds, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.einsum("bqc,bqhw->bchw", cls_scores.softmax(-1)[..., :-1], mask_preds.sigmoid())
