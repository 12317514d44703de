"""Bad input is refused with a ValueError naming the bad value and what is valid, before any work."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cpd import comb, fingerprint
from cpd.prune import PruneConfig, Pruner, load_pruned, save_pruned
from zoo import ZOO


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kwargs, match", [
    ({"thresholds": (1.2,)}, r"thresholds=\[1.2\]: 1.2 is not a sparsity in \(0, 1\)"),
    ({"thresholds": (0.0,)}, r"0.0 is not a sparsity in \(0, 1\)"),
    ({"thresholds": 1.0}, r"1.0 is not a sparsity in \(0, 1\)"),
    ({"thresholds": (-0.1, 0.5)}, r"-0.1 is not a sparsity"),
    ({"thresholds": (0.5, 0.3)}, r"thresholds=\[0.5, 0.3\]: must be strictly ascending"),
    ({"thresholds": (0.3, 0.3)}, r"strictly ascending"),
    ({"thresholds": ()}, r"non-empty"),
    ({"criterion": "hesian"}, r"criterion='hesian': not a registered importance; choose one of \[.*'hessian'"),
    ({"metric": "macs"}, r"metric='macs': not supported; choose one of \['params', 'flops', 'channels', 'latency'\]"),
    ({"interval": 0}, r"interval=0: must be an integer >= 1"),
    ({"round_to": 2.5}, r"round_to=2.5: must be an integer >= 1"),
    ({"step_fraction": 0.0}, r"step_fraction=0.0: must be in \(0, 1\]"),
    ({"min_keep": 1.0}, r"min_keep=1.0: must be in \[0, 1\)"),
    ({"seed": "x"}, r"seed='x': must be an integer"),
])
def test_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PruneConfig(**kwargs)


def test_config_from_dict() -> None:
    cfg = PruneConfig.from_dict({"thresholds": [0.2, 0.4], "metric": "flops"})
    assert cfg.thresholds == (0.2, 0.4) and cfg.target == 0.4 and cfg.step_size == pytest.approx(0.04)
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown prune option\(s\) \['target'\]; valid options are \[.*'thresholds'"):
        PruneConfig.from_dict({"target": 0.5})


class Untraceable(nn.Module):
    def forward(self, x):
        raise AssertionError("the model must not run before the config is checked")


def test_pruner_checks_before_any_work() -> None:
    with pytest.raises(ValueError, match="config must be a PruneConfig, got dict"):
        Pruner(Untraceable(), (torch.randn(1),), {"thresholds": (0.5,)})
    case = ZOO["residual_blocks"]
    graph = comb(case.build(), case.inputs())
    with pytest.raises(ValueError, match=f"graph was made for fingerprint {graph.fingerprint}"):
        Pruner(ZOO["gap_classifier"].build(), case.inputs(), graph=graph)


def test_gradient_criterion_without_accumulate() -> None:
    case = ZOO["conv_bn_relu_chain"]
    pruner = Pruner(case.build(), case.inputs(), PruneConfig(interval=1))
    with pytest.raises(RuntimeError, match=r"needs pruner.accumulate\(\) after every backward"):
        pruner.step()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    case = ZOO["residual_blocks"]
    pruner = Pruner(case.build(), case.inputs(), PruneConfig(criterion="magnitude", interval=1, round_to=2))
    pruner.step()
    pruned, plan = pruner.export()
    path = tmp_path_factory.mktemp("pruned") / "model.pt"
    save_pruned(pruned, plan, path)
    return path, plan


def test_plan_for_another_model(saved: tuple[Path, dict]) -> None:
    path, plan = saved
    other = ZOO["gap_classifier"].build()
    before = fingerprint(other)
    with pytest.raises(ValueError, match=f"plan was made for a model with fingerprint {plan['fingerprint']}, "
                                         f"this model has {before}"):
        load_pruned(other, path)
    assert fingerprint(other) == before  # untouched


def test_corrupted_plans(saved: tuple[Path, dict]) -> None:
    path, plan = saved
    base = ZOO["residual_blocks"].build()
    bad = copy.deepcopy(plan)
    gid = next(iter(bad["removed"]))
    n = bad["graph"]["groups"][int(gid)]["num_units"]
    bad["removed"][gid] = [n + 3]
    with pytest.raises(ValueError, match=f"plan removes unit {n + 3} of group {gid}; valid units are 0..{n - 1}"):
        load_pruned(base, bad, {})
    bad["removed"][gid] = list(range(n))
    with pytest.raises(ValueError, match=f"plan removes all {n} units of group {gid}"):
        load_pruned(base, bad, {})
    with pytest.raises(ValueError, match=r"not a cpd plan \(format is 'cpd-deps', expected 'cpd-plan'\)"):
        load_pruned(base, plan["graph"], {})
    with pytest.raises(ValueError, match="no weights given"):
        load_pruned(base, plan)
    with pytest.raises(ValueError, match="plan version 7 is not supported"):
        load_pruned(base, {**plan, "version": 7}, {})
    assert fingerprint(base) == plan["fingerprint"]  # untouched


def test_weights_that_do_not_fit(saved: tuple[Path, dict], tmp_path: Path) -> None:
    path, plan = saved
    base = ZOO["residual_blocks"].build()
    full = ZOO["residual_blocks"].build().state_dict()  # unpruned shapes
    with pytest.raises(ValueError, match=r"the weights do not fit this plan on this model: .*wrong shapes \["):
        load_pruned(base, plan, full)
    partial = {k: v for k, v in torch.load(path, weights_only=True)["state_dict"].items() if "head" not in k}
    with pytest.raises(ValueError, match=r"missing \['head.bias', 'head.weight'\]"):
        load_pruned(base, json.dumps(plan), partial)
    assert fingerprint(base) == plan["fingerprint"]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    model = load_pruned(base, tmp_path / "plan.json", path)  # plan file + checkpoint as weights
    assert fingerprint(model) != plan["fingerprint"]


def test_pruner_state_from_elsewhere() -> None:
    a = Pruner(ZOO["residual_blocks"].build(), ZOO["residual_blocks"].inputs(), PruneConfig(interval=1))
    b = Pruner(ZOO["gap_classifier"].build(), ZOO["gap_classifier"].inputs(), PruneConfig(interval=1))
    with pytest.raises(ValueError, match=f"saved with fingerprint='{a.graph.fingerprint}', this pruner has "
                                         f"fingerprint='{b.graph.fingerprint}'"):
        b.load_state_dict(a.state_dict())
    c = Pruner(ZOO["residual_blocks"].build(), ZOO["residual_blocks"].inputs(), PruneConfig(criterion="random"))
    with pytest.raises(ValueError, match="saved with criterion='obd', this pruner has criterion='random'"):
        c.load_state_dict(a.state_dict())
    state = a.state_dict()
    state["dead"] = {"999": [0]}
    with pytest.raises(ValueError, match="units of group 999, which this pruner does not prune"):
        a.load_state_dict(state)
    with pytest.raises(ValueError, match="not a cpd pruner state"):
        a.load_state_dict({"masks": {}})


def test_an_exclude_that_matches_nothing_is_refused() -> None:
    case = ZOO["residual_blocks"]
    with pytest.raises(ValueError, match=r"exclude=\['no_such_module'\] matches no parameter or module"):
        comb(case.build(), case.inputs(), exclude=["stem", "no_such_module"])
    graph = comb(case.build(), case.inputs(), exclude=["stem"])
    assert any("excluded by the user" in g.reason for g in graph.groups)
