"""The PruningHook's calibration batches: the importance is scored on them, the training run is the one it would
have been, and an interrupted run resumes to the same result."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg")
pytest.importorskip("sklearn")

from mm_tiny import HOOK, PRUNE_CONFIG, Interrupted, calibration_loader, options  # noqa: E402

from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.rebuild import prune_target  # noqa: E402
from cpd.mm.train import train  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpd.data.digit_mosaic import write_mmseg_layout

    return write_mmseg_layout(tmp_path_factory.mktemp("digits") / "mosaic", n_train=16, n_val=8, seed=0)


def hook(data: Path | None) -> dict:
    return dict(HOOK) if data is None else dict(HOOK, calibration_dataloader=calibration_loader(data))


def pruning_hook(runner) -> PruningHook:
    return next(h for h in runner.hooks if isinstance(h, PruningHook))


def weights(runner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in prune_target(runner.model).state_dict().items()}


def test_calibration_scores_other_batches_and_leaves_training_as_it_was(data: Path, tmp_path: Path) -> None:
    # two iterations, before the first pruning step (interval 3): only the importance can differ
    plain = train(PRUNE_CONFIG, tmp_path / "plain", options(data, max_iters=2, hooks=[dict(hook(None), interval=3)]))
    calib = train(PRUNE_CONFIG, tmp_path / "calib", options(data, max_iters=2, hooks=[dict(hook(data), interval=3)]))
    a, b = weights(plain), weights(calib)
    assert a.keys() == b.keys()
    for name in a:  # parameters and norm statistics: the training step is the one it would have been
        assert torch.equal(a[name], b[name]), name
    sp, sc = pruning_hook(plain).pruner.saliency, pruning_hook(calib).pruner.saliency
    assert sp.batches == sc.batches == 2
    assert any(float(v.abs().sum()) > 0 for v in sc.first.values())
    assert any(not torch.allclose(sp.first[g], sc.first[g]) for g in sp.first)  # scored on other data


def test_a_run_with_calibration_prunes_and_resumes_to_the_same_result(data: Path, tmp_path: Path) -> None:
    ref = train(PRUNE_CONFIG, tmp_path / "ref", options(data, max_iters=6, hooks=[hook(data)]))
    ref_hook = pruning_hook(ref)
    assert ref_hook.materialized and ref_hook.plan["removed"]
    assert [e.batches for e in ref_hook.pruner.history] == [2, 2]
    work = tmp_path / "resumed"
    with pytest.raises(Interrupted):  # mid-interval, on the second epoch of the calibration loader
        train(PRUNE_CONFIG, work, options(data, max_iters=6, hooks=[hook(data), dict(type="CrashHook", at=3)]))
    runner = train(PRUNE_CONFIG, work, options(data, max_iters=6, hooks=[hook(data)]), resume=True)
    got = pruning_hook(runner)
    assert got.plan["removed"] == ref_hook.plan["removed"]
    assert [e.to_dict() for e in got.pruner.history] == [e.to_dict() for e in ref_hook.pruner.history]
    for name, value in weights(ref).items():
        assert torch.allclose(weights(runner)[name], value, rtol=1e-5, atol=1e-6), name


def test_a_bad_calibration_loader_is_one_line() -> None:
    with pytest.raises(ValueError, match=r"calibration_dataloader='val' must be a dataloader config with a 'dataset'"):
        PruningHook(calibration_dataloader="val")


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle that depends on ``set_epoch`` (as mmengine's ``DefaultSampler``)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.n


class FakeRunner:
    seed = 7
    model = torch.nn.Linear(1, 1)

    @staticmethod
    def build_dataloader(cfg: dict, seed: int) -> torch.utils.data.DataLoader:
        data = torch.utils.data.TensorDataset(torch.arange(cfg["n"]))
        return torch.utils.data.DataLoader(data, batch_size=3, sampler=EpochSampler(cfg["n"], seed))


def test_batch_i_is_the_same_however_it_is_reached() -> None:
    from cpd.mm.calibration import CalibrationBatches

    cfg = dict(n=10, dataset=None)  # 4 batches an epoch, the last one short
    walked = CalibrationBatches(FakeRunner(), cfg)
    sequence = [walked.batch(i)[0].tolist() for i in range(11)]
    assert sequence[0] != sequence[4]  # each epoch has its own order
    assert sorted(sum(sequence[:4], [])) == list(range(10))
    for start in (1, 4, 6, 9):  # a run resumed at step ``start``
        resumed = CalibrationBatches(FakeRunner(), cfg)
        assert [resumed.batch(i)[0].tolist() for i in range(start, 11)] == sequence[start:], start
    jumped = CalibrationBatches(FakeRunner(), cfg)
    assert jumped.batch(5)[0].tolist() == sequence[5] and jumped.batch(2)[0].tolist() == sequence[2]


def test_an_empty_calibration_loader_is_one_line() -> None:
    from cpd.mm.calibration import CalibrationBatches

    class Empty(FakeRunner):
        @staticmethod
        def build_dataloader(cfg: dict, seed: int) -> list:
            return []

    with pytest.raises(ValueError, match="calibration_dataloader holds no batch"):
        CalibrationBatches(Empty(), dict(dataset=None))
