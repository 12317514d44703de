"""Image classification: mmpretrain's ``ImageClassifier``.

Training computes ``head(extract_feat(x))`` (backbone, then neck, then the head's logits) and a
loss on them; inference computes the same logits and a softmax, so both forwards return the head's
class scores. The head's last layer gives the classes: the trace sees it feed the output, so comb
never lets it be pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cpd.mm.tasks.base import DistillOutputs, Task, flat_tensors


class Classification(Task):
    """mmpretrain classifiers; example batches default to 224x224."""

    name = "classification"
    scope = "mmpretrain"
    package = "mmpretrain.models"
    registry_module = "mmpretrain.registry"
    fallback_size = (224, 224)

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
