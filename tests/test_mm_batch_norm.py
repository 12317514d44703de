"""``PruningHook(bn_batches=N)``: the saved cut models hold batch norm statistics of the cut model, re-estimated
on the run's first N training batches; the training run itself is the one it would have been."""
from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmpretrain")
pytest.importorskip("sklearn")

from cls_tiny import CLS_CONFIG, CLS_HOOK, cls_options  # noqa: E402

from cpd.mm.batch_norm import loss_forward  # noqa: E402
from cpd.mm.pruned import load_pruned_model  # noqa: E402
from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.rebuild import prune_target  # noqa: E402
from cpd.mm.train import train  # noqa: E402
from cpd.prune.batch_norm import reestimate_batch_norm_  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(240), pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpd.data.digit_pairs import write_mmpretrain_layout

    return write_mmpretrain_layout(tmp_path_factory.mktemp("pairs") / "pairs", n_train=32, n_val=16, seed=0)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_saved_models_get_the_cut_models_statistics_and_training_is_unchanged(data: Path, tmp_path: Path) -> None:
    plain = train(CLS_CONFIG, tmp_path / "plain", cls_options(data, hooks=[dict(CLS_HOOK)]))
    fresh = train(CLS_CONFIG, tmp_path / "bn", cls_options(data, hooks=[dict(CLS_HOOK, bn_batches=3)]))

    trained_plain, trained_fresh = state(prune_target(plain.model)), state(prune_target(fresh.model))
    assert trained_plain.keys() == trained_fresh.keys()
    for k, v in trained_plain.items():  # the run trained on is the same, statistics included
        assert torch.equal(v, trained_fresh[k]), k

    loader = fresh.build_dataloader(copy.deepcopy(fresh.cfg.train_dataloader), seed=fresh.seed)
    first = list(itertools.islice(iter(loader), 3))
    for name in ("thr_0.2.pth", "thr_0.4.pth"):
        stale, got = load_pruned_model(tmp_path / "plain" / name), load_pruned_model(tmp_path / "bn" / name)
        want = copy.deepcopy(stale)
        assert reestimate_batch_norm_(want, first, forward=loss_forward) == 3
        moved = 0
        for (k, a), b, w in zip(state(stale).items(), state(got).values(), state(want).values(), strict=True):
            if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
                assert torch.allclose(b.double(), w.double(), rtol=1e-5, atol=1e-6), (name, k)
                moved += int(not torch.allclose(a.double(), b.double(), rtol=1e-3, atol=1e-5))
            else:  # weights as training left them
                assert torch.equal(a, b), (name, k)
        assert moved > 0, name


@pytest.mark.parametrize("value", [-1, 2.5, True, "20"])
def test_a_bad_bn_batches_is_one_line(value: object) -> None:
    with pytest.raises(ValueError, match=r"PruningHook: bn_batches=.* must be a whole number of training batches"):
        PruningHook(bn_batches=value)
