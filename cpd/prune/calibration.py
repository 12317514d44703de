"""Importance from calibration batches: data the model has not been trained on, scored beside training.

A model that has memorised its training set leaves almost no gradient on a training batch (the criteria
benchmark's classifier: a training batch's squared gradient norm is 78,000 times smaller than a held-out
batch's).  :func:`accumulate_on` scores one batch of other data instead (on that classifier: the same
accuracy right after the cut, a better one after fine-tuning; docs/pruning.md): it runs the batch's loss backward, adds those gradients to the
pruner's importance, and puts back the training gradients, the buffers (norm running statistics) the
forward changed and the random generators' states (dropout's draws), so that the training step that
follows is the one it would have been.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from cpd.prune.pruner import Pruner


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Run the body, then give torch's (CPU and CUDA), numpy's and Python's random generators their states from
    before it: whatever it draws, the draws after it are those that would have come."""
    cuda = torch.cuda.is_initialized()
    generators = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else None, np.random.get_state(),
                  random.getstate())
    try:
        yield
    finally:
        torch.set_rng_state(generators[0])
        if cuda:
            torch.cuda.set_rng_state_all(generators[1])
        np.random.set_state(generators[2])
        random.setstate(generators[3])


@contextmanager
def training_state_kept(model: nn.Module) -> Iterator[None]:
    """Run the body with no parameter gradients, then give every parameter its gradient, every buffer its value
    and torch's, numpy's and Python's random generators their states from before it.

    The gradients are set aside, not copied: with ``grad`` None, a backward in the body makes new tensors.
    """
    grads = [(p, p.grad) for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        with random_state_kept():
            yield
    finally:
        with torch.no_grad():
            for p, g in grads:
                p.grad = g
            for b, value in buffers:
                b.copy_(value)


def accumulate_on(pruner: Pruner, loss_fn: Callable[[], torch.Tensor], keep: nn.Module | None = None) -> float | None:
    """Add one calibration batch's gradients to the pruner's importance; training's state is left as it was.

    A criterion that needs no gradient (``magnitude``, ``random``) only counts the batch: nothing is run.

    Args:
        pruner: the pruner whose importance the batch adds to (its model is the one ``loss_fn`` runs).
        loss_fn: computes the batch's scalar loss on ``pruner.model`` (in the mode training uses: the
            saliency is that of the training loss on other data).
        keep: the module whose gradients and buffers are put back (default: the pruner's model); the whole
            training model when the loss runs more than the pruned one (a distiller's connectors).

    Returns:
        The batch's loss, or None when the criterion needs no gradient.

    Raises:
        ValueError: ``loss_fn`` did not return a scalar tensor that needs a gradient.
    """
    if not pruner.importance.needs_gradients:
        pruner.accumulate()
        return None
    model = pruner.model if keep is None else keep
    with training_state_kept(model):
        loss = loss_fn()
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad):
            raise ValueError("loss_fn must return a scalar tensor that needs a gradient (the calibration batch's "
                             f"loss); got {type(loss).__name__}"
                             f"{'' if not isinstance(loss, torch.Tensor) else f' of shape {tuple(loss.shape)}'}")
        loss.backward()
        pruner.accumulate()
    return float(loss.detach())
