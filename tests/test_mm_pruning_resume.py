"""Kill and resume: a pruning run interrupted at any point and resumed with ``--resume`` ends with the same plan,
the same threshold files and the same weights as the run that was never interrupted."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg")
pytest.importorskip("sklearn")

from mm_tiny import HOOK, PRUNE_CONFIG, Interrupted, options  # noqa: E402

from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.rebuild import prune_target  # noqa: E402
from cpd.mm.train import train  # noqa: E402
from cpd.prune import read_checkpoint  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(180)]
MAX_ITERS = 8  # pruning steps at iterations 2 and 4 (target reached, model cut at 4), then fine-tuning


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpd.data.digit_mosaic import write_mmseg_layout

    return write_mmseg_layout(tmp_path_factory.mktemp("digits") / "mosaic", n_train=16, n_val=8, seed=0)


def result(runner) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    state = {k: v.detach().clone() for k, v in prune_target(runner.model).state_dict().items()}
    return hook.plan["removed"], [e.to_dict() for e in hook.pruner.history], state


@functools.lru_cache(maxsize=None)
def reference(data: Path, work: Path) -> tuple[dict, list, dict[str, torch.Tensor]]:
    return result(train(PRUNE_CONFIG, work, options(data, max_iters=MAX_ITERS)))


@pytest.mark.parametrize("crash_at", [3, 4, 6], ids=["mid-interval", "at-the-cut", "while-fine-tuning"])
def test_resume_reaches_the_same_result(data: Path, tmp_path_factory: pytest.TempPathFactory, crash_at: int) -> None:
    ref_work = Path(str(data)).parent.parent / "reference"
    removed, history, weights = reference(data, ref_work)
    work = tmp_path_factory.mktemp(f"resumed{crash_at}")
    hooks = [dict(HOOK), dict(type="CrashHook", at=crash_at)]
    with pytest.raises(Interrupted):
        train(PRUNE_CONFIG, work, options(data, max_iters=MAX_ITERS, hooks=hooks))
    assert (work / f"iter_{crash_at}.pth").is_file()

    runner = train(PRUNE_CONFIG, work, options(data, max_iters=MAX_ITERS), resume=True)
    assert runner.iter == MAX_ITERS
    got_removed, got_history, got_weights = result(runner)
    assert got_removed == removed
    assert got_history == history
    assert got_weights.keys() == weights.keys()
    for name, ref in weights.items():
        assert got_weights[name].shape == ref.shape, name
        assert torch.allclose(got_weights[name], ref, rtol=1e-5, atol=1e-6), name
    for name in ("thr_0.2.pth", "thr_0.4.pth"):
        plan, state = read_checkpoint(work / name)
        ref_plan, ref_state = read_checkpoint(ref_work / name)
        assert plan["removed"] == ref_plan["removed"]
        assert all(torch.allclose(state[k], v, rtol=1e-5, atol=1e-6) for k, v in ref_state.items())
