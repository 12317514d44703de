"""The pruner's state is plain data, and its pre-prune hooks run once per pruning step, before the ranking."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cpd.prune import PruneConfig, Pruner
from cpd.prune.state import PruneEvent, PrunerState
from zoo import ZOO

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(pruner: Pruner, model: torch.nn.Module, inputs: tuple, iters: int) -> None:
    for it in range(iters):
        gen = torch.Generator().manual_seed(it)
        model(*(torch.randn(x.shape, generator=gen) for x in inputs)).square().mean().backward()
        pruner.accumulate()
        model.zero_grad()
        pruner.step()


def test_pre_prune_hooks_see_the_interval_before_it_is_ranked() -> None:
    case = ZOO["residual_blocks"]
    model = case.build()
    pruner = Pruner(model, case.inputs(), PruneConfig(interval=3, thresholds=(0.6,), step_fraction=0.05, round_to=1))
    seen: list[tuple[int, int]] = []

    def hook(saliency) -> None:
        seen.append((pruner.iteration, saliency.batches))
        for t in saliency.sums():  # the hook may rewrite the sums: a doubled saliency ranks alike
            t.mul_(2.0)

    handle = pruner.register_prune_pre_hook(hook)
    _run(pruner, model, case.inputs(), 7)
    assert seen == [(3, 3), (6, 3)]  # once per pruning step, with the whole interval accumulated
    handle.remove()
    _run(pruner, model, case.inputs(), 3)
    assert len(seen) == 2 and len(pruner.history) == 3


def test_pruner_state_is_data_and_round_trips() -> None:
    case = ZOO["residual_blocks"]
    model = case.build()
    pruner = Pruner(model, case.inputs(), PruneConfig(interval=2, thresholds=(0.3,), step_fraction=0.1))
    _run(pruner, model, case.inputs(), 5)
    state = PrunerState.from_dict(pruner.state_dict())
    assert state.iteration == 5 and state.dead == pruner.removed() and state.history == pruner.history
    assert all(isinstance(e, PruneEvent) for e in state.history)
    assert PrunerState.from_dict(state.to_dict()) == state
    with pytest.raises(ValueError, match="removes units .* of group .* at least one kept"):
        gid = next(iter(state.dead))
        n = len(pruner.masks.dead[gid])
        state.check_fits(state.fingerprint, state.criterion, state.metric, {gid: n, **{
            g: len(d) for g, d in pruner.masks.dead.items() if g != gid}} | {gid: 1})
    other = Pruner(case.build(), case.inputs(), PruneConfig(interval=2, thresholds=(0.3,), step_fraction=0.1))
    other.load_state_dict(state.to_dict())
    assert other.removed() == pruner.removed() and other.iteration == 5
    assert np.array_equal(other.rng.random(3), pruner.rng.random(3))
