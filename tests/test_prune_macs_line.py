"""A latency model's MACs line: fitted through the baseline on the whole-model cuts, read and written with the
file, and used by the pruner for the latency sparsity of a cut (counted through the deployment forward).

Nothing is timed: ``measure`` is a deterministic function of the cut model's MACs.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from cpd.combing import comb
from cpd.flops import count_macs
from cpd.importance.latency import LatencyModel
from cpd.prune import PruneConfig, Pruner
from cpd.prune.latency import fit_macs_line, profile_latency, widths_reachable
from cpd.prune.masks import removed_of
from cpd.prune.pruner import MEASURED_SLACK, OVERSHOOT
from test_prune_latency import run  # the training loop without training

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(1, 3, 16, 16)
OVERHEAD = 1e-3


class TwoHeads(nn.Module):
    """A body, the head inference runs, and an auxiliary head only the training forward runs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(48, 16, 1), nn.ReLU(), nn.Conv2d(16, 10, 1))
        self.aux = nn.Conv2d(48, 10, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_forward(model: TwoHeads, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = model.body(x)
    return model.head(features), model.aux(features)


def infer_forward(model: TwoHeads, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def seconds(model: nn.Module) -> float:
    """A 'latency' linear in the MACs inference runs: the line fits it exactly."""
    return OVERHEAD + 1e-9 * count_macs(model, (X,), infer_forward)


def profiled(measure=seconds) -> tuple[TwoHeads, object, LatencyModel]:
    model = TwoHeads().eval()
    graph = comb(model, (X,), forward_fn=train_forward)
    lm = profile_latency(model, graph, measure, "fake", X.shape, round_to=2, align=False,
                         macs=lambda m: float(count_macs(m, (X,), infer_forward)))
    return model, graph, lm


def hiding_last_body_group(model: TwoHeads) -> Callable[[nn.Module], float]:
    """A measure whose single-group cuts of the body's last group time as if they saved a tenth of their work
    (the noise hid it); every other cut, the whole-model ones included, times true (:func:`seconds`)."""
    def measure(m: nn.Module) -> float:
        true = seconds(m)
        if m.body[3].out_channels < 48 and m.body[0].out_channels == 32 and m.head[0].out_channels == 16:
            return seconds(model) - 0.1 * (seconds(model) - true)
        return true

    return measure


def underpriced() -> tuple[object, LatencyModel, PruneConfig]:
    """TwoHeads' graph, its latency model profiled through :func:`hiding_last_body_group` (the whole-model
    cuts time true, so the line is exact and the curves underprice that group), and a one-step config."""
    model = TwoHeads().eval()
    graph = comb(model, (X,), forward_fn=train_forward)
    lm = profile_latency(model, graph, hiding_last_body_group(model), "fake", X.shape, round_to=2, align=False,
                         macs=lambda m: float(count_macs(m, (X,), infer_forward)))
    cfg = PruneConfig(criterion="random", metric="latency", interval=1, thresholds=(0.3,), step_fraction=0.3,
                      round_to=2, seed=3)
    return graph, lm, cfg


def first_step(graph, lm: LatencyModel, cfg: PruneConfig) -> Pruner:
    """A pruner of a fresh TwoHeads after its first pruning step (no measurement: the line predicts)."""
    pruner = Pruner(TwoHeads(), (X,), cfg, forward_fn=train_forward, graph=graph, latency=lm,
                    latency_forward=infer_forward)
    pruner.accumulate()
    pruner.prune_step()
    return pruner


def random_cut(graph, seed: int) -> dict[int, list[int]]:
    rng = np.random.default_rng(seed)
    removed = {}
    for g in graph.prunable():
        options = widths_reachable(g, 2, 0.1)
        pick = int(rng.integers(-1, len(options)))
        if pick >= 0 and options[pick][1]:
            removed[g.id] = options[pick][1]
    return removed


def test_the_line_is_fitted_through_the_baseline_on_the_whole_model_cuts() -> None:
    model, graph, lm = profiled()
    full = count_macs(model, (X,), infer_forward)
    # seconds = overhead + rate * MACs: a cut saving the share s of the MACs saves rate * s * full seconds
    assert lm.macs_line == pytest.approx(1e-9 * full / lm.baseline, rel=1e-9)
    joint = lm.info["joint"]
    assert len(joint) >= 2 and all(0 < p["macs_share_saved"] < 1 for p in joint)
    assert lm.info["line_over_curves"] > 0
    for seed in range(4):  # uneven cuts the profile never measured: the line predicts them exactly
        removed = random_cut(graph, seed)
        pruner = Pruner(TwoHeads(), (X,), PruneConfig(metric="params"), forward_fn=train_forward, graph=graph)
        pruner.masks.kill_(removed)
        cut = pruner.export()[0].eval()
        share = 1.0 - count_macs(cut, (X,), infer_forward) / full
        assert lm.predict_from_macs(share) == pytest.approx(seconds(cut), rel=1e-9)
    # the auxiliary head is not in the line: it counted what inference runs
    assert lm.baseline == pytest.approx(seconds(model))


def test_the_line_needs_points_that_save_macs_and_a_positive_slope() -> None:
    assert fit_macs_line([], 1.0) is None
    assert fit_macs_line([{"macs_share_saved": 0.0, "measured_saving_s": 0.1}], 1.0) is None
    assert fit_macs_line([{"macs_share_saved": 0.5, "measured_saving_s": -0.1}], 1.0) is None
    points = [{"macs_share_saved": 0.2, "measured_saving_s": 0.2}, {"macs_share_saved": 0.4, "measured_saving_s": 0.4}]
    assert fit_macs_line(points, 2.0) == pytest.approx(0.5)
    # without ``macs``, no line: the curves predict
    model = TwoHeads().eval()
    graph = comb(model, (X,), forward_fn=train_forward)
    plain = profile_latency(model, graph, seconds, "fake", X.shape, round_to=2, align=False)
    assert plain.macs_line is None and "line_over_curves" not in plain.info
    with pytest.raises(ValueError, match="no MACs line"):
        plain.predict_from_macs(0.3)


def test_file_keeps_the_line_and_reads_the_version_before_it() -> None:
    _, _, lm = profiled()
    back = LatencyModel.from_dict(lm.to_dict())
    assert back.macs_line == lm.macs_line and back.to_dict() == lm.to_dict()
    old = {**lm.to_dict(), "version": 3}
    del old["macs_line"]
    assert LatencyModel.from_dict(old).macs_line is None
    for bad in (-0.5, 0.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="macs_line"):
            LatencyModel.from_dict({**lm.to_dict(), "macs_line": bad})
    with pytest.raises(ValueError, match="version 2"):
        LatencyModel.from_dict({**lm.to_dict(), "version": 2})


def test_pruner_predicts_by_the_line_through_the_inference_forward() -> None:
    model, graph, lm = profiled()
    cfg = PruneConfig(criterion="magnitude", metric="latency", interval=1, thresholds=(0.2, 0.4), step_fraction=0.1,
                      round_to=2)
    pruner = run(Pruner(TwoHeads(), (X,), cfg, forward_fn=train_forward, graph=graph, latency=lm, measure=seconds,
                        latency_forward=infer_forward))
    assert pruner.done and not pruner.exhausted and pruner.reached == [0.2, 0.4]
    assert pruner.line is not None and pruner.line.full == count_macs(model, (X,), infer_forward)
    truth = 1.0 - seconds(pruner.export()[0].eval()) / lm.baseline
    assert 0.4 - MEASURED_SLACK <= truth <= 0.4 + 0.05
    # the latency is linear in the MACs inference runs: every prediction of the line is the measurement
    assert pruner.checks and all(c["predicted"] == pytest.approx(c["measured"], abs=1e-9) for c in pruner.checks)
    assert pruner.correction == pytest.approx(1.0)
    assert pruner.plan()["summary"]["latency"]["macs_line"] == lm.macs_line
    # the same cut counted through the training forward (auxiliary head included) is another share
    train_share = 1.0 - (count_macs(pruner.export()[0].eval(), (X,), train_forward)
                         / count_macs(model, (X,), train_forward))
    assert pruner._predicted() == pytest.approx(lm.macs_line * (1.0 - pruner.line.count(pruner.masks.removed())
                                                                / pruner.line.full))
    assert abs(pruner._predicted() - lm.macs_line * train_share) > 1e-4


def test_without_a_line_the_pruner_predicts_by_the_curves() -> None:
    from dataclasses import replace

    _, graph, lm = profiled()
    cfg = PruneConfig(criterion="magnitude", metric="latency", interval=1, thresholds=(0.3,), round_to=2)
    curves = run(Pruner(TwoHeads(), (X,), cfg, forward_fn=train_forward, graph=graph,
                        latency=replace(lm, macs_line=None)))
    assert curves.line is None and curves.done
    assert curves.sparsity == pytest.approx(curves._by_costs(curves.masks.dead))
    lined = run(Pruner(TwoHeads(), (X,), cfg, forward_fn=train_forward, graph=graph, latency=lm,
                       latency_forward=infer_forward))
    assert lined.done and lined.sparsity >= 0.3 - 1e-9
    assert lined.sparsity == pytest.approx(lined.line(removed_of(lined.masks.dead)))
    truth = 1.0 - seconds(lined.export()[0].eval()) / lm.baseline
    assert truth == pytest.approx(lined.sparsity, abs=1e-9)


def test_a_pick_the_curves_underprice_is_reselected_at_its_own_line_ratio(monkeypatch) -> None:
    """Single-group cuts of the body's last group time as if they saved a tenth of their work (the noise
    hid it); the whole-model cuts time true, so the line is exact and the curves underprice that group.  A
    scale taken from the cut so far sends the first step far past the threshold; the pick re-selected at its
    own ratio lands on it."""
    import cpd.prune.line_pick as line_pick

    graph, lm, cfg = underpriced()
    full = count_macs(TwoHeads().eval(), (X,), infer_forward)
    assert lm.macs_line == pytest.approx(1e-9 * full / lm.baseline, rel=1e-9)  # the joint cuts time true
    landed = {}
    # the pick as selected, not bisected (the next test): what the reselection alone does
    monkeypatch.setattr(line_pick, "shrunk", lambda options, dead, picked, need, threshold, view: picked)
    for tries in (1, line_pick.LINE_TRIES):
        monkeypatch.setattr(line_pick, "LINE_TRIES", tries)
        landed[tries] = first_step(graph, lm, cfg).sparsity
    assert landed[line_pick.LINE_TRIES] <= 0.3 + 0.02 < landed[1], landed


def test_without_reselection_the_pick_is_bisected_to_land(monkeypatch) -> None:
    """The same underpriced group with a single selection per round (a rescale bounded short of the pick's
    ratio reads the same): the pick is bisected to the largest share of the need that the line says lands."""
    import cpd.prune.line_pick as line_pick

    monkeypatch.setattr(line_pick, "LINE_TRIES", 1)
    pruner = first_step(*underpriced())
    assert 0.3 - 0.02 <= pruner.sparsity <= 0.3 + 0.02


def test_a_pick_the_costs_see_no_saving_in_is_bisected_too(monkeypatch) -> None:
    """Where the curves and their interaction price a pick at no saving, or a negative one, though the line
    says it saves much (PSPNet-R18: a wide group whose single-group curve is flat over its first cuts, taken
    beside a group already cut far), there is no ratio to rescale by: the pick is bisected, not kept."""
    graph, lm, cfg = underpriced()
    # every cut as the costs price it saves nothing: only the line tells a pick's saving
    monkeypatch.setattr(Pruner, "_by_costs", lambda self, dead: 0.0)
    pruner = first_step(graph, lm, cfg)
    assert 0.3 - 0.02 <= pruner.sparsity <= 0.3 + 0.02, pruner.sparsity
    truth = 1.0 - seconds(pruner.export()[0].eval()) / lm.baseline
    assert truth == pytest.approx(pruner.sparsity, abs=1e-9)


def coarse_saving(model: TwoHeads, share: float = 0.3) -> Callable[[nn.Module], float]:
    """A measure of the tiny ViT's kind: the MACs channels save are worth a twentieth of what the line says,
    and the first cut of the body's last group (a head, on the ViT) saves ``share`` of the time at once."""
    base = seconds(model)

    def measure(m: nn.Module) -> float:
        line_saving = base - seconds(m)
        return base - 0.05 * line_saving - share * base * (m.body[3].out_channels < 48)

    return measure


def body_last_goes_last(share: float, seed: int = 0) -> tuple[Pruner, Callable[[nn.Module], float], LatencyModel]:
    """A timed pruner of TwoHeads under :func:`coarse_saving` (thresholds 0.1 and 0.2, ``min_keep=0.5``) whose
    body's last group goes last (the other groups' channels are all taken first); its measure and latency model."""
    model, graph, lm = profiled()  # the line is exact for MACs
    measure = coarse_saving(model, share)
    cfg = PruneConfig(criterion="random", metric="latency", interval=1, thresholds=(0.1, 0.2), step_fraction=0.2,
                      round_to=2, min_keep=0.5, seed=seed)
    pruner = Pruner(TwoHeads(), (X,), cfg, forward_fn=train_forward, graph=graph, latency=lm, measure=measure,
                    latency_forward=infer_forward)
    last = next(g.id for g in pruner.groups if g.num_units == 48)
    chosen = pruner.scores
    pruner.scores = lambda: {g: s + (1e6 if g == last else 0.0) for g, s in chosen().items()}
    return pruner, measure, lm


def test_a_prediction_the_timings_contradict_steers_from_the_last_measurement() -> None:
    """The line credits channels with what their MACs would save; the timings give them almost nothing,
    and only the body's last group saves time, in one removal past both thresholds.  Steering by the
    corrected prediction alone, a pruner scales a cut it has just measured short up to the goal, takes
    nothing more and runs out; steering from the last measurement it takes that removal, keeps it when
    its retake is the same cut, and reaches both thresholds where the timings say."""
    pruner, measure, lm = body_last_goes_last(share=0.3)
    last = next(g.id for g in pruner.groups if g.num_units == 48)
    run(pruner)
    assert pruner.done and not pruner.exhausted and pruner.reached == [0.1, 0.2]
    truth = 1.0 - measure(pruner.export()[0].eval()) / lm.baseline
    assert pruner.sparsity == pytest.approx(truth) and truth >= 0.3
    assert last in pruner.removed() and len(pruner.removed()[last]) == 2  # one removal of it: the smallest
    # every cut that reached the goal went past it; the retakes fell short; the least of the past cuts is kept
    past = [c for c in pruner.checks if c["measured"] > 0.1 + OVERSHOOT]
    assert len(past) >= 4 and pruner.sparsity == pytest.approx(min(c["measured"] for c in past))
    # ... timed once more, so that the last measurement is of the model kept and decides with the other two
    assert pruner.checks[-1]["predicted"] in [c["predicted"] for c in pruner.checks[:-1]]
    assert pruner.checks[-1]["decided"] == pytest.approx(pruner.sparsity)
    assert [e.crossed for e in pruner.history] == [(0.1, 0.2)]
    # the estimate of a measured cut is its measurement, whatever the corrected prediction says
    assert pruner.estimate() == pytest.approx(pruner.sparsity)
    assert abs(pruner.correction * pruner._predicted() - pruner.sparsity) > 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_step_its_timings_say_is_short_takes_more(seed: int) -> None:
    """Channels save a twentieth of what the line says and the body's last group a sixth of the time at
    once: the 0.2 threshold is out of reach.  A pruner that scales its prediction of a cut it has just
    measured short up to the goal takes nothing at each later step (dozens of steps that remove no unit and
    time the same model, creeping on by one removal now and then); steering from the measurement, every
    step takes what its timings say it lacks until no group can lose another unit."""
    pruner, measure, lm = body_last_goes_last(share=0.15, seed=seed)
    run(pruner)
    assert pruner.exhausted and pruner.reached == [0.1]
    assert all(event.removed for event in pruner.history), [(e.iteration, e.sparsity) for e in pruner.history]
    assert len(pruner.history) <= 3
    truth = 1.0 - measure(pruner.export()[0].eval()) / lm.baseline
    assert pruner.sparsity == pytest.approx(truth) and 0.15 < truth < 0.2 - OVERSHOOT
