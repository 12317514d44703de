"""``metric="latency"``: the latency model file, its curves, the schedule's costs and the measured pruner.

Nothing here is timed: ``measure`` is a deterministic function of the cut model's MACs (with a term that
the additive latency model cannot predict, so the pruner has to correct its prediction by measurement).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cpd.combing import comb
from cpd.flops import count_macs, count_param_macs
from cpd.importance import CostModel
from cpd.importance.latency import GroupCurve, LatencyModel, monotone, read_latency_model
from cpd.prune import PruneConfig, Pruner
from cpd.prune.latency import profile_latency, width_at, widths_reachable
from cpd.prune.pruner import MEASURED_SLACK
from cpd.prune.schedule import group_removals, limits_of, select
from cpd.safe_load import BadFileError

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(1, 3, 16, 16)


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(),
                         nn.Conv2d(48, 12, 1), nn.ReLU(), nn.Conv2d(12, 10, 1))


def fake_seconds(model: nn.Module) -> float:
    """A deterministic 'latency': a fixed overhead plus MACs, plus a superlinear term (memory traffic)."""
    macs = count_macs(model, (X,))
    return 1e-3 + macs * 1e-9 + (macs * 1e-6) ** 2 * 1e-4


def small_model() -> LatencyModel:
    return LatencyModel("abcd" * 4, "onnxruntime-cpu", (1, 3, 16, 16), 0.010,
                        {0: GroupCurve((8, 16, 32), (0.004, 0.006, 0.010)),
                         1: GroupCurve((8, 24, 48), (0.0095, 0.0098, 0.010))}, {"threads": 1})


def test_monotone_fit_pools_what_the_noise_reverses() -> None:
    fit = monotone([1.0, 3.0, 2.0, 4.0])
    assert np.all(np.diff(fit) >= 0)
    np.testing.assert_allclose(fit, [1.0, 2.5, 2.5, 4.0])
    curve = GroupCurve((8, 16, 24, 32), (0.5, 0.7, 0.6, 1.0))
    widths = np.arange(0, 33)
    assert np.all(np.diff(curve.at(widths)) >= -1e-12)  # a narrower layer is never predicted slower
    assert float(curve.at(32)) == 1.0 and float(curve.at(40)) == 1.0
    # a noisy curve whose full-width point is pooled down still predicts the baseline at full width
    lm = LatencyModel("f" * 16, "fake", (1,), 1.0, {0: GroupCurve((8, 16), (1.2, 1.0))})
    assert lm.predict({0: 16}) == pytest.approx(1.0) and lm.predict({0: 8}) == pytest.approx(1.0)


def test_file_round_trip_and_refusals(tmp_path) -> None:
    lm = small_model()
    path = tmp_path / "latency.json"
    lm.save(path)
    back = read_latency_model(path)
    assert back.to_dict() == lm.to_dict()
    assert back.predict({0: 16, 1: 48}) == pytest.approx(0.006)
    with pytest.raises(ValueError, match="fingerprint"):
        back.check_fits("0" * 16)
    with pytest.raises(ValueError, match="runtime 'onnxruntime-cpu', not 'torch-eager'"):
        back.check_fits(lm.fingerprint, runtime="torch-eager")
    with pytest.raises(ValueError, match=r"input shape \[1, 3, 16, 16\], not \[1, 3, 32, 32\]"):
        back.check_fits(lm.fingerprint, input_shape=(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"no curve for the prunable group\(s\) \[2\]"):
        back.check_fits(lm.fingerprint, groups=[0, 1, 2])
    back.check_fits(lm.fingerprint, "onnxruntime-cpu", [1, 3, 16, 16], [0, 1])
    doc = json.loads(path.read_text())
    doc["version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(BadFileError, match=f"{path}.*version 99"):
        read_latency_model(path)
    path.write_text(json.dumps({**lm.to_dict(), "baseline_s": -1}))
    with pytest.raises(BadFileError, match="baseline"):
        read_latency_model(path)


def test_schedule_prefers_the_group_that_costs_more_time() -> None:
    model = conv_net()
    graph = comb(model, (X,))
    groups = {g.id: g for g in graph.prunable()}
    assert set(groups) == {0, 1, 2}
    lm = LatencyModel(graph.fingerprint, "fake", X.shape, 0.010,
                      {0: GroupCurve((8, 32), (0.0099, 0.010)),     # group 0: nearly free
                       1: GroupCurve((8, 48), (0.004, 0.010)),      # group 1: most of the time
                       2: GroupCurve((4, 12), (0.0099, 0.010))})
    costs = CostModel(model, list(groups.values()), latency=lm)
    dead = {g: np.zeros(groups[g].num_units, dtype=bool) for g in groups}
    per_unit = {g: costs.unit_costs(groups[g], dead, "latency") for g in groups}
    assert per_unit[1].min() > per_unit[0].max()
    options = {}
    for g in groups.values():
        limits = limits_of(g, costs.channels[g.id], 8, 0.1)
        scores = np.ones(g.num_units)  # equal importance: only the cost decides (score / cost)
        options[g.id] = group_removals(g.id, dead[g.id], scores, per_unit[g.id], per_unit[g.id], limits)
    picked = select(options, need=0.002)
    assert set(picked) == {1}
    assert costs.total(dead, "latency") == pytest.approx(0.010)


def test_profile_measures_the_reachable_widths() -> None:
    model = conv_net()
    graph = comb(model, (X,))
    calls = []

    def measure(m: nn.Module) -> float:
        calls.append(m)
        return fake_seconds(m)

    lm = profile_latency(model, graph, measure, "fake", X.shape, round_to=8, min_keep=0.1)
    assert lm.fingerprint == graph.fingerprint and lm.baseline == pytest.approx(fake_seconds(model))
    assert all(not m.training for m in calls)
    for g in graph.prunable():
        curve = lm.groups[g.id]
        reachable = {w for w, _ in widths_reachable(g, 8, 0.1)}
        assert curve.widths[-1] == g.num_units and set(curve.widths[:-1]) <= reachable
        assert len(curve.widths) >= 2 and list(curve.seconds) == sorted(curve.seconds)
    # at a measured point of one group, the additive prediction is the measurement
    w = lm.groups[1].widths[0]
    removed = {1: list(range(w, 48))}
    cut = Pruner(conv_net(), (X,), PruneConfig(metric="params", criterion="magnitude"))
    cut.masks.kill_(removed)
    assert lm.baseline - lm.additive_saving({1: w}) == pytest.approx(fake_seconds(cut.export()[0].eval()))
    assert lm.predict({1: w}) == pytest.approx(lm.baseline - lm.interaction * lm.additive_saving({1: w}))
    # every group is measured at its floor, the narrowest width the schedule can reach
    for g in graph.prunable():
        assert lm.groups[g.id].widths[0] == min(w for w, _ in widths_reachable(g, 8, 0.1))
    # the whole-model cuts: the floor and one per fraction, after the baseline and the single-group widths;
    # two fractions that pick the same widths of every group are one cut, timed once
    singles = sum(len(c.widths) - 1 for c in lm.groups.values())
    assert [p["fraction"] for p in lm.info["joint"]] == [0.0, 0.25, 0.5, 0.75]
    cuts = {tuple(width_at(widths_reachable(g, 8, 0.1), g.num_units, f)[0] for g in graph.prunable())
            for f in (0.0, 0.25, 0.5, 0.75)}
    assert 2 <= len(cuts) and len(calls) == 1 + singles + len(cuts)
    assert model[3].out_channels == 48  # the profiled model is not changed
    assert lm.info["round_to"]["suggested"] is None  # no group of 64 channels to try alignments on


def run(pruner: Pruner) -> Pruner:
    for _ in range(200):
        if pruner.done:
            break
        pruner.accumulate()
        pruner.step()
    return pruner


def test_pruner_stops_when_the_measured_sparsity_reaches_each_threshold() -> None:
    graph = comb(conv_net(), (X,))
    # additive (no joint cuts), so the prediction is off and the pruner's own measurements must correct it
    lm = profile_latency(conv_net(), graph, fake_seconds, "fake", X.shape, round_to=2, align=False, joint=False)
    assert lm.interaction == 1.0 and "joint" not in lm.info
    cfg = PruneConfig(criterion="random", metric="latency", interval=1, thresholds=(0.2, 0.4), step_fraction=0.1,
                      round_to=2)
    pruner = run(Pruner(conv_net(), (X,), cfg, graph=graph, latency=lm, measure=fake_seconds))
    assert pruner.done and not pruner.exhausted and pruner.reached == [0.2, 0.4]
    truth = 1.0 - fake_seconds(pruner.export()[0].eval()) / lm.baseline
    assert pruner.sparsity == pytest.approx(truth)
    assert 0.4 - MEASURED_SLACK <= truth <= 0.4 + 0.05
    events = [e for e in pruner.history if e.crossed]
    for event, t in zip(events, (0.2, 0.4)):
        assert event.crossed == (t,) and event.sparsity >= t - MEASURED_SLACK and event.predicted is not None
    checks = pruner.checks
    assert checks and all({"predicted", "measured", "corrected", "seconds", "goal", "decided"} <= set(c)
                          for c in checks)
    assert pruner.sparsity == pytest.approx(checks[-1]["decided"])
    # the additive model over-predicts what two cut neighbours save: a measurement fell short and corrected it
    assert any(c["measured"] < c["goal"] - MEASURED_SLACK for c in checks)
    # ... and was timed once more on the same model (same prediction, and this measure is deterministic)
    # before the pruner acted on it
    first_off = next(i for i, c in enumerate(checks) if c["measured"] < c["goal"] - MEASURED_SLACK)
    assert checks[first_off + 1]["predicted"] == checks[first_off]["predicted"]
    assert checks[first_off + 1]["measured"] == checks[first_off]["measured"]
    # the correction pools every measurement: least squares through zero of measured over predicted
    pm = sum(c["predicted"] * c["measured"] for c in checks)
    assert pruner.correction == pytest.approx(np.clip(pm / sum(c["predicted"] ** 2 for c in checks), 0.25, 4))
    assert pruner.correction != 1.0
    summary = pruner.plan()["summary"]["latency"]
    assert summary["checks"] == checks and summary["baseline_s"] == lm.baseline
    # the pruner's state carries the correction and the measurements
    again = Pruner(conv_net(), (X,), cfg, graph=graph, latency=lm, measure=fake_seconds)
    again.load_state_dict(pruner.state_dict())
    assert again.correction == pruner.correction and again.checks == checks


def test_a_crossing_is_decided_on_two_timings_not_the_first_that_reads_fast() -> None:
    """The first timing of every model reads ``fast`` too fast in latency sparsity, later ones read true: a
    pruner that accepted a threshold on its first timing would stop up to ``fast`` short of it (optional
    stopping: every shortfall is re-timed, so only the fast readings would stand)."""
    fast = 0.06
    graph = comb(conv_net(), (X,))
    lm = profile_latency(conv_net(), graph, fake_seconds, "fake", X.shape, round_to=2, align=False, joint=False)
    seen: set[float] = set()
    firsts: list[bool] = []  # per call: the model's first timing

    def first_fast(model: nn.Module) -> float:
        seconds, key = fake_seconds(model), count_macs(model, (X,))
        firsts.append(key not in seen)
        seen.add(key)
        return seconds - fast * lm.baseline if firsts[-1] else seconds

    cfg = PruneConfig(criterion="random", metric="latency", interval=1, thresholds=(0.2, 0.4), step_fraction=0.05,
                      round_to=2)
    pruner = run(Pruner(conv_net(), (X,), cfg, graph=graph, latency=lm, measure=first_fast))
    assert pruner.reached == [0.2, 0.4]
    for event in (e for e in pruner.history if e.crossed):
        # the crossing's model was timed twice (same prediction), and the mean of the two decided it
        first, second = [c for c in pruner.checks if c["iteration"] == event.iteration][-2:]
        assert first["predicted"] == second["predicted"] and first["measured"] == pytest.approx(second["measured"] + fast)
        assert event.sparsity == pytest.approx(second["decided"])
        assert second["decided"] == pytest.approx(0.5 * (first["measured"] + second["measured"]))
    truth = 1.0 - fake_seconds(pruner.export()[0].eval()) / lm.baseline
    # the model kept at the target is short of it by at most half the fast reading, never by all of it
    assert truth >= 0.4 - MEASURED_SLACK - fast / 2 - 1e-9
    # every model whose first timing alone read it past the next threshold was timed again before it was kept
    first_reached = next(e.iteration for e in pruner.history if e.crossed == (0.2,))
    assert len(firsts) == len(pruner.checks)
    for i, c in enumerate(pruner.checks[:-1]):
        t = 0.2 if c["iteration"] <= first_reached else 0.4
        if firsts[i] and c["measured"] >= t - MEASURED_SLACK > c["measured"] - fast:
            assert pruner.checks[i + 1]["predicted"] == c["predicted"]


def test_interaction_fitted_on_whole_model_cuts_predicts_them_better() -> None:
    """``fake_seconds`` has a term quadratic in the MACs: cutting neighbours together saves less than the sum of
    their single savings. The joint cuts measure it (interaction below 1), and the prediction of other
    whole-model cuts, ones the profile never measured, moves towards the truth."""
    model = conv_net()
    graph = comb(model, (X,))
    lm = profile_latency(model, graph, fake_seconds, "fake", X.shape, round_to=2, align=False)
    additive = profile_latency(model, graph, fake_seconds, "fake", X.shape, round_to=2, align=False, joint=False)
    assert 0.25 <= lm.interaction < 1.0 and lm.groups == additive.groups
    for p in lm.info["joint"]:
        assert p["measured_saving_s"] < p["additive_saving_s"]
    assert LatencyModel.from_dict(lm.to_dict()).interaction == lm.interaction
    for f in (0.35, 0.6):
        removed = {}
        for g in graph.prunable():
            width, units = min(widths_reachable(g, 2, 0.1), key=lambda wu: abs(wu[0] - f * g.num_units))
            removed[g.id] = (width, units)
        twin = Pruner(conv_net(), (X,), PruneConfig(metric="params", criterion="magnitude"), graph=graph)
        twin.masks.kill_({g: u for g, (_, u) in removed.items()})
        truth = fake_seconds(twin.export()[0].eval())
        widths = {g: w for g, (w, _) in removed.items()}
        assert abs(lm.predict(widths) - truth) < abs(additive.predict(widths) - truth)
    with pytest.raises(ValueError, match="interaction"):
        LatencyModel(lm.fingerprint, "fake", X.shape, 0.01, lm.groups, interaction=0.0)


def linear_seconds(model: nn.Module) -> float:
    """A 'latency' exactly linear in the MACs: whatever it does not add up is the layers' overlap."""
    return 1e-3 + count_macs(model, (X,)) * 1e-9


def test_macs_overlap_predicts_uneven_cuts_that_one_factor_misses() -> None:
    """Two neighbouring groups cut at once share the convolution between them. The MACs overlap says by
    how much for any shape of cut; one factor fitted on uniform cuts cannot, so cuts of one group alone, or
    of neighbours at very different widths, are predicted well only with the overlap."""
    model = conv_net()
    graph = comb(model, (X,))
    param_macs = lambda m: count_param_macs(m, (X,))  # noqa: E731
    lm = profile_latency(model, graph, linear_seconds, "fake", X.shape, round_to=2, align=False, param_macs=param_macs)
    single = profile_latency(model, graph, linear_seconds, "fake", X.shape, round_to=2, align=False)
    assert lm.overlap == "macs" and single.overlap == "none"
    assert lm.interaction == pytest.approx(1.0, abs=0.05) and single.interaction < 0.9  # what the overlap explains
    assert all(0 < p["overlap"] < 1 for p in lm.info["joint"]) and all(p["overlap"] == 1 for p in single.info["joint"])
    assert LatencyModel.from_dict(lm.to_dict()).overlap == "macs"
    groups = graph.prunable()
    costs = CostModel(model, groups, *param_macs(model), latency=lm)
    flat = CostModel(model, groups, latency=single)
    rng = np.random.default_rng(0)
    for _ in range(4):  # uneven cuts: each group to its own random reachable width, some left whole
        removed = {}
        for g in groups:
            options = widths_reachable(g, 2, 0.1)
            pick = int(rng.integers(-1, len(options)))
            if pick >= 0:
                removed[g.id] = options[pick][1]
        dead = {g.id: np.isin(np.arange(g.num_units), removed.get(g.id, [])) for g in groups}
        twin = Pruner(conv_net(), (X,), PruneConfig(metric="params", criterion="magnitude"), graph=graph)
        twin.masks.kill_({g: u for g, u in removed.items() if u})
        truth = linear_seconds(twin.export()[0].eval())
        got = costs.total(dead, "latency")
        assert got == pytest.approx(truth, rel=0.02)
        assert abs(got - truth) <= abs(flat.total(dead, "latency") - truth) + 1e-9
        for g in groups:  # a unit's cost is what the prediction loses by removing it
            live = np.flatnonzero(~dead[g.id])
            if live.size < 2:
                continue
            more = {**dead, g.id: dead[g.id].copy()}
            more[g.id][live[-1]] = True
            step = costs.total(dead, "latency") - costs.total(more, "latency")
            assert costs.unit_costs(g, dead, "latency")[live[-1]] == pytest.approx(step, rel=0.15, abs=1e-7)


class Residual(nn.Module):
    """``y + b(y)``: ``b``'s weight is sliced on both of its axes by one group."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c, self.d = nn.Conv2d(8, 6, 1), nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.d(torch.relu(self.c(y + self.b(y))))


@pytest.mark.parametrize("make", [conv_net, Residual])
def test_overlap_is_one_for_a_single_group_and_below_for_neighbours(make) -> None:
    model = make()
    graph = comb(model, (X,))
    groups = graph.prunable()
    costs = CostModel(model, groups, *count_param_macs(model, (X,)))
    dead = {g.id: np.arange(g.num_units) < g.num_units // 2 for g in groups}
    for g in groups:  # one group cut: nothing is counted twice, whatever its parameters hold
        assert costs.overlap({g.id: dead[g.id]}) == pytest.approx(1.0)
    assert costs.overlap(dead) < 1.0  # neighbours cut together share the layer between them
    assert costs.overlap({}) == 1.0
    if make is Residual:  # the case a sum over members would count twice
        assert any([m.name for m in g.members].count("b.weight") == 2 for g in groups)


def test_pruner_without_measure_uses_the_prediction() -> None:
    graph = comb(conv_net(), (X,))
    lm = profile_latency(conv_net(), graph, fake_seconds, "fake", X.shape, align=False)
    cfg = PruneConfig(criterion="magnitude", metric="latency", interval=1, thresholds=(0.3,))
    pruner = run(Pruner(conv_net(), (X,), cfg, graph=graph, latency=lm))
    assert pruner.done and pruner.checks == []
    assert pruner.sparsity == pytest.approx(pruner.history[-1].predicted) and pruner.sparsity >= 0.3 - 1e-9


def test_latency_metric_needs_a_model_that_fits() -> None:
    cfg = PruneConfig(criterion="magnitude", metric="latency")
    with pytest.raises(ValueError, match="needs a latency model"):
        Pruner(conv_net(), (X,), cfg)
    with pytest.raises(ValueError, match="fingerprint"):
        Pruner(conv_net(), (X,), cfg, latency=small_model())


def test_points_the_noise_cannot_resolve_take_the_macs_prior() -> None:
    """A group whose measured effect is within the noise gets MACs-proportional savings; one whose
    measured effect stands out of the noise keeps its measurement."""
    model = conv_net()
    graph = comb(model, (X,))
    wobble = iter([0.0, 2e-5, -2e-5] + [3e-6 * (-1) ** i for i in range(100)])

    def measure(m: nn.Module) -> float:
        extra = 2e-3 if m[6].in_channels <= 16 else 0.0  # a step the MACs do not show
        return 3e-3 + 1e-9 * count_macs(m, (X,)) + next(wobble) - extra

    macs = lambda m: float(count_macs(m, (X,)))  # noqa: E731
    lm = profile_latency(model, graph, measure, "fake", X.shape, round_to=8, align=False, macs=macs, repeats=3,
                         min_noise=0.05)
    points = lm.info["points"]
    assert points["noise_s"] >= 0.05 * lm.baseline and points["rate_s_per_mac"] > 0
    g1 = points["groups"]["1"]
    for w, measured, prior, used in zip(g1["widths"], g1["measured"], g1["prior"], g1["used"]):
        if abs(measured - prior) <= 3 * points["noise_s"]:
            assert used == prior
        else:
            assert used == measured and w <= 16
    assert any(u == m for u, m in zip(g1["used"], g1["measured"]))  # the jump at width 16 or less is kept
    assert list(lm.groups[0].seconds[:-1]) == points["groups"]["0"]["prior"]  # group 0: all within noise


def test_noise_that_buries_every_single_group_saving_takes_the_rate_from_whole_model_cuts() -> None:
    """On a loaded machine every single-group cut of a small model can time slower than the baseline: the
    single-group fit then says no MAC costs time, and a prior of zero would leave nothing to prune.  The rate
    comes from the whole-model cuts instead, so every group's narrowest width saves time."""
    model = conv_net()
    graph = comb(model, (X,))
    full = (32, 48, 12)
    repeats = iter([3.0e-3, 3.1e-3, 2.9e-3])

    def measure(m: nn.Module) -> float:
        cut = sum(layer.out_channels < n for layer, n in zip((m[0], m[3], m[6]), full))
        if cut == 0:
            return next(repeats)
        if cut == 1:  # a single group: the noise, always against it
            return 3.2e-3
        return 1e-3 + 2e-3 * count_macs(m, (X,)) / count_macs(model, (X,))

    macs = lambda m: float(count_macs(m, (X,)))  # noqa: E731
    lm = profile_latency(model, graph, measure, "fake", X.shape, round_to=8, align=False, macs=macs, repeats=3,
                         min_noise=0.1)
    points = lm.info["points"]
    assert points["rate_from"] == "whole-model cuts" and points["rate_s_per_mac"] > 0
    for g in graph.prunable():
        narrowest = min(lm.groups[g.id].widths)
        assert lm.predict({g.id: narrowest}) < lm.baseline, g.id
    # the same noise without whole-model cuts: the rate is the baseline's seconds per MAC
    repeats = iter([3.0e-3, 3.1e-3, 2.9e-3])
    alone = profile_latency(model, graph, measure, "fake", X.shape, round_to=8, align=False, macs=macs,
                            repeats=3, min_noise=0.1, joint=False)
    assert alone.info["points"]["rate_from"] == "baseline / MACs"
    assert alone.info["points"]["rate_s_per_mac"] == pytest.approx(3.0e-3 / macs(model))
