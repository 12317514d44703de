"""The PruningHook's calibration batches: importance scored on a dataloader of data the model was not trained on.

``PruningHook(calibration_dataloader=dict(...))`` takes an mmengine dataloader config (as ``val_dataloader``
is written, with the test pipeline and a split training never sees); at every optimizer step the hook adds
the gradients of that loader's next batch to the importance, instead of the training batch's, and leaves
the training step as it was (:func:`cpd.prune.calibration.accumulate_on`).  Batch ``i`` of the endless
sequence over the loader's epochs is the one scored at optimizer step ``i``, so a resumed run scores the
batches the uninterrupted one did (given a loader whose epochs are reproducible: mmengine's
``DefaultSampler`` with the run's seed, and no random transform).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from cpd.mm.rebuild import unwrap


class CalibrationBatches:
    """The calibration loader of a run, batch by batch, and the training loss of a batch.

    Args:
        runner: the mmengine runner (its ``build_dataloader``, seed and model are used).
        dataloader: the mmengine dataloader config.

    Raises:
        ValueError: the loader holds no batch.
    """

    def __init__(self, runner: Any, dataloader: Mapping[str, Any]) -> None:
        self.loader = runner.build_dataloader(copy.deepcopy(dict(dataloader)), seed=runner.seed)
        self.size = len(self.loader)
        if self.size == 0:
            raise ValueError("PruningHook: calibration_dataloader holds no batch; give it a dataset of at least "
                             "one batch")
        self.model = unwrap(runner.model)
        self._batches: Iterator[Any] | None = None
        self._next = -1  # the index the live iterator yields next

    def batch(self, index: int) -> Any:
        """Batch ``index`` of the sequence over epochs (epoch ``index // size``, position ``index % size``)."""
        epoch, position = divmod(index, self.size)
        if index != self._next or position == 0:
            set_epoch = getattr(self.loader.sampler, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
            self._batches = iter(self.loader)
            for _ in range(position):  # a resumed run: skip to where the interrupted one was
                next(self._batches)
        self._next = index + 1
        return next(self._batches)

    def loss(self, index: int) -> torch.Tensor:
        """The model's training loss (``mode='loss'``, parsed as the optimizer wrapper's is) on batch ``index``."""
        data = self.model.data_preprocessor(self.batch(index), True)
        losses = self.model(**data, mode="loss") if isinstance(data, dict) else self.model(*data, mode="loss")
        loss, _ = self.model.parse_losses(losses)
        return loss
