"""Batch norm statistics re-estimated after a cut.

A batch norm normalises with running statistics in eval mode.  While the model is pruned those statistics
follow the masked model only as fast as their momentum lets them (0.1 per training forward): right after a
pruning step, every batch norm downstream of the removed channels still holds the statistics of the model
before it, so the model saved or measured at a threshold is evaluated with stale ones.
:func:`reestimate_batch_norm_` recomputes them from a few batches, with no gradient and no weight change
(as adaptive batch norm evaluation does): each batch norm's running mean and variance become the plain
average of its batch statistics over the batches (``momentum=None``); those training keeps frozen (a
backbone's ``norm_eval``) stay as they are.  Layer, group and RMS norms keep no running statistics and need
nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    """Every batch norm of ``model`` that keeps running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


@torch.no_grad()
def reestimate_batch_norm_(model: nn.Module, batches: Iterable[Any],
                           forward: Callable[[nn.Module, Any], Any] | None = None) -> int:
    """Replace the running statistics of every batch norm that training updates by those of ``batches``.

    The model runs each batch in training mode (``model.train()``) without gradients; each batch norm in
    training mode then ends with the mean of its batch statistics over the batches as running mean and
    (unbiased) variance, and ``num_batches_tracked`` counts them.  A batch norm that ``model.train()`` leaves in
    eval mode (a backbone's ``norm_eval``, frozen statistics) keeps its statistics, as in training.
    Parameters are not touched, and every module's mode and every batch norm's momentum are put back.  A
    model without a batch norm that training updates runs nothing.

    Args:
        model: the model (masked or cut).
        batches: the inputs, one per forward (a list, or a loader's first few batches).
        forward: runs one batch, ``forward(model, batch)``; default ``model(batch)``.

    Returns:
        The number of batches run (0 when no batch norm is updated in training).

    Raises:
        ValueError: ``batches`` holds none (and there are batch norms to estimate).
    """
    norms = batch_norms(model)
    if not norms:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    active = [m for m in norms if m.training]
    momenta = [(m, m.momentum) for m in active]
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in active]
    run = forward if forward is not None else (lambda mod, batch: mod(batch))
    seen = 0
    try:
        if not active:
            return 0
        for m in active:
            m.reset_running_stats()
            m.momentum = None
        for batch in batches:
            run(model, batch)
            seen += 1
        if seen == 0:
            raise ValueError("reestimate_batch_norm_ got no batch: pass at least one input batch to estimate the "
                             f"running statistics of the model's {len(active)} batch norms from")
    except BaseException:
        for m, mean, var, count in saved:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        raise
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for m, mode in modes:
            m.training = mode
    return seen
