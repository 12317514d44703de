"""Batch norm statistics of the PruningHook's saved models, re-estimated on the run's training data.

``PruningHook(bn_batches=N)`` runs each cut model it saves (``thr_<x>.pth``) over the first ``N`` batches of a
fresh loader built from the run's ``train_dataloader`` config, with no gradient, so that its batch norms hold
the cut model's statistics instead of the stale ones of the masked model (:mod:`cpd.prune.batch_norm`).  The
model being trained is not touched, and the random generators are put back, so training goes on as it would
have.  Only the main process saves, so only it runs the batches: the copy's ``SyncBatchNorm`` modules become
plain batch norms first (their state is the same), which asks no other rank for anything.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any

from torch import nn

from cpd.mm.build import sync_bn_to_bn_
from cpd.prune.batch_norm import batch_norms, reestimate_batch_norm_
from cpd.prune.calibration import random_state_kept


def loss_forward(model: nn.Module, batch: Any) -> None:
    """Run one loader batch through ``model``'s data preprocessor and its training forward (``mode='loss'``),
    so every batch norm training uses (auxiliary heads' too) sees it."""
    data = model.data_preprocessor(batch, True)
    if isinstance(data, dict):
        model(**data, mode="loss")
    else:
        model(*data, mode="loss")


def reestimate_on_training_data_(model: nn.Module, runner: Any, batches: int) -> int:
    """Re-estimate ``model``'s batch norms on the first ``batches`` batches of the run's training data.

    Args:
        model: the cut (student) model about to be saved; changed in place (a copy, never the one training).
        runner: the mmengine runner (its ``cfg.train_dataloader``, ``build_dataloader`` and seed are used).
        batches: how many batches to run.

    Returns:
        The number of batches run (0 when the model has no batch norm: no loader is built).
    """
    if batches <= 0 or not batch_norms(model):
        return 0
    sync_bn_to_bn_(model)
    cfg = copy.deepcopy(runner.cfg.train_dataloader)
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    cfg["persistent_workers"] = False  # the workers go with the iterator
    with random_state_kept():
        loader = runner.build_dataloader(cfg, seed=runner.seed)
        return reestimate_batch_norm_(model, itertools.islice(iter(loader), batches), forward=loss_forward)
