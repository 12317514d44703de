"""Image classification: mmpretrain's ``ImageClassifier``.

Training computes ``head(extract_feat(x))`` (backbone, then neck, then the head's logits) and a
loss on them; inference computes the same logits and a softmax, so both forwards return the head's
class scores. The head's last layer gives the classes: the trace sees it feed the output, so comb
never lets it be pruned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmengine.config import Config
from torch import nn

from cpd.mm.tasks.base import DistillOutputs, Size, Task, flat_tensors

#: test-pipeline transforms whose output has one fixed size, and the argument that holds it (``(W, H)`` or an int)
FIXED_SIZE_TRANSFORMS = {"CenterCrop": "crop_size", "RandomResizedCrop": "scale", "Resize": "scale"}


def pipeline_size(pipeline: Any) -> Size | None:
    """The ``(H, W)`` a test pipeline's last fixed-size transform gives, or None.

    Args:
        pipeline: a list of transform configs (mmpretrain's ``test_pipeline``).

    Returns:
        ``(H, W)`` of the last ``CenterCrop``, ``RandomResizedCrop`` or ratio-changing ``Resize``
        (mmcv's sizes are ``(W, H)`` or one int); None when no transform fixes the size.
    """
    size = None
    for transform in pipeline or []:
        if not isinstance(transform, Mapping):
            continue
        kind = str(transform.get("type", "")).rpartition(".")[2]
        key = FIXED_SIZE_TRANSFORMS.get(kind)
        value = transform.get(key) if key else None
        if value is None or (kind == "Resize" and transform.get("keep_ratio")):
            continue
        if isinstance(value, int):
            size = (value, value)
        elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
            size = (int(value[1]), int(value[0]))
    return size


class Classification(Task):
    """mmpretrain classifiers; example batches are the test pipeline's crop, else 224x224."""

    name = "classification"
    scope = "mmpretrain"
    package = "mmpretrain.models"
    registry_module = "mmpretrain.registry"
    fallback_size = (224, 224)

    def declared_size(self, cfg_or_model: Config | nn.Module) -> Size | None:
        """A config's test-pipeline crop (:func:`pipeline_size`); a model declares none of its own.

        ``mmpretrain``'s data preprocessor has no size: what inference sees is the test pipeline's
        output (``CenterCrop(crop_size=224)``, ``Resize(scale=384)``). A config whose images come at
        their final size names it with a top-level ``input_size = (H, W)`` (:meth:`Task.default_size`).
        """
        if isinstance(cfg_or_model, nn.Module):
            return None
        dataset = cfg_or_model.get("test_dataloader", {}).get("dataset", {}) or {}
        while isinstance(dataset, Mapping) and "pipeline" not in dataset and "dataset" in dataset:
            dataset = dataset["dataset"]  # wrappers (ClassBalancedDataset, RepeatDataset)
        pipeline = dataset.get("pipeline") if isinstance(dataset, Mapping) else None
        return pipeline_size(pipeline if pipeline is not None else cfg_or_model.get("test_pipeline"))

    def train_forward(self, model: nn.Module, inputs: torch.Tensor) -> list[Any]:
        """The head's class scores (one tensor per output of heads that have several).

        Raises:
            TypeError: ``model`` has no ``extract_feat`` or no ``head`` (a backbone-only or
                self-supervised config).
        """
        head = getattr(model, "head", None)
        if not callable(getattr(model, "extract_feat", None)) or not isinstance(head, nn.Module):
            raise TypeError(
                f"a classifier needs extract_feat and a head; {type(model).__name__} has "
                f"{'no head' if head is None else 'no extract_feat'} (is this a classification config?)"
            )
        return flat_tensors(head(model.extract_feat(inputs)), "head.forward")

    def logits(self, model: nn.Module, outputs: Sequence[Any]) -> list[torch.Tensor]:
        """Every output: a classifier returns only class scores."""
        return list(outputs)

    def infer_forward(self, model: nn.Module, inputs: torch.Tensor) -> list[Any]:
        """The class logits, as inference computes them before the softmax."""
        return self.train_forward(model, inputs)

    def distill_forward(self, model: nn.Module, inputs: torch.Tensor, data_samples: Any = None
                        ) -> DistillOutputs:
        """The head's loss on its class scores (what ``head.loss`` computes), the scores, the features.

        Raises:
            TypeError: ``model`` has no ``extract_feat``, or no head with ``_get_loss`` (mmpretrain's
                ``ClsHead`` and its subclasses have it).
        """
        head = getattr(model, "head", None)
        if not callable(getattr(model, "extract_feat", None)) or not callable(getattr(head, "_get_loss", None)):
            raise TypeError(f"distilling a classifier needs extract_feat and a ClsHead-like head with _get_loss; "
                            f"{type(model).__name__} has head {type(head).__name__}")
        feats = model.extract_feat(inputs)
        scores = model.head(feats)
        losses = model.head._get_loss(scores, data_samples) if data_samples is not None else {}
        return DistillOutputs(dict(losses), flat_tensors(scores, "head.forward"), feats)
