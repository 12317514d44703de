"""``Pruner``: prune a model while it trains.  Masks during training, physical removal at the end.

Lifecycle (as torchao's sparsifier: prepare, step, squash)::

    pruner = Pruner(model, example_inputs, PruneConfig(thresholds=(0.3, 0.5)))
    for batch in loader:
        loss = criterion(model(batch.x), batch.y)
        loss.backward()
        pruner.accumulate()          # add this batch's saliency (every batch of the interval counts)
        optimizer.step(); optimizer.zero_grad()
        event = pruner.step()        # re-zero dead slices; every `interval` steps, prune
        if event and event.crossed:
            save_pruned(*pruner.export(), f"pruned_{event.crossed[-1]}.pt")
        if pruner.done:
            break
    plan = pruner.materialize_()     # the model is now physically pruned; build a new optimizer

``pruner.attach(optimizer)`` does ``accumulate`` before and ``step`` after every ``optimizer.step()``;
``pruner.register_prune_pre_hook(fn)`` runs ``fn(saliency)`` right before each pruning step ranks the units
(under DDP: average the saliency over ranks there).
Pruning steps: see :mod:`cpd.prune.schedule` for which units go and :class:`PruneConfig` for how much.

``metric="latency"``: the cost of each unit comes from a measured
:class:`~cpd.importance.latency.LatencyModel` (:func:`cpd.prune.latency.profile_latency`), and with a
``measure`` callback the whole cut model is re-measured after every pruning step: the sparsity reported is
``1 - measured / baseline``. A measured cut is the anchor of every later estimate: the estimate of another cut
is the anchor's measured sparsity plus the predicted difference, scaled by the *correction* (the least-squares
factor, through zero, of every measured sparsity of the run over its prediction, so one noisy timing moves it
little). The prediction only prices what a step adds, so a latency model whose shape is wrong (one that
credits channels with the MACs they save, where the time goes to attention heads) cannot make the pruner
believe a cut it has just measured short reaches its goal. A step short of its goal, or more than
``OVERSHOOT`` past the next threshold, is timed once more first (a single timing on a loaded machine is often
off by more than either margin), and the mean of the two decides; a step still short prunes on, one still past
gives its removals back and takes again, up to ``MAX_CORRECTIONS`` times. A retake that is the same cut keeps
it: no smaller removal reaches the goal (one head of a two-head layer saves more than the distance to the
threshold), and the step crosses every threshold it passes; a step whose every cut that reached the goal went
past, and whose re-takes fell short, keeps the least of those past cuts, timed once more. A step that reaches a
threshold is timed twice too, and the mean of the two decides whether it did: accepting a crossing on its
first timing while re-timing every shortfall would stop on the first timing that happens to read fast (optional stopping), and the model
saved at the threshold would be slower than the run reports. Every measurement is recorded (``pruner.checks``,
the plan's summary) with the prediction beside it.

A latency model with a *MACs line* (``macs_line``, fitted on whole-model cuts) predicts with it: the
sparsity of a cut is ``b * s``, ``s`` the share of the deployed graph's counted MACs it saves, plus
``c * e`` where the model has an element rate ``c`` (``e`` the share of its counted elements)
(:class:`cpd.prune.macs_line.MacsLine`, the cut copy counted through ``latency_forward`` at the latency
model's input shape).  The curves still price the units (which go first); their prices are scaled to the
line by what the line says the cut so far saves over what the curves say (before any cut, by the
profile's joint cuts: ``info["line_over_curves"]``).  Where the pick of a round would go past the next
threshold by the line, it is selected again at the ratio the line gives the pick itself, and one still past
(or one the curves price at no saving, so that there is no ratio) is bisected to the largest share of the
need that lands (:mod:`cpd.prune.line_pick`).  A sum of per-group curves carries every group's timing
noise; the line is fitted on cuts that save far more than the noise (docs/pruning.md).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from cpd.combing import comb
from cpd.flops import count_macs, count_param_macs
from cpd.graph.forward import run_forward
from cpd.graph.group import DependencyGraph, fingerprint
from cpd.importance import IMPORTANCES, CostModel, ImportanceContext, SaliencyAccumulator, build_importance
from cpd.importance.latency import LatencyModel, fit_through_zero
from cpd.prune.config import PruneConfig
from cpd.prune.live_norm import attach_live_norms, strip_live_norms_
from cpd.prune.line_pick import LineView, line_pick, line_scale
from cpd.prune.macs_line import MacsLine
from cpd.prune.masks import MaskSet, removed_of
from cpd.prune.plan import make_plan
from cpd.prune.schedule import EPS, group_removals, limits_of, select
from cpd.prune.state import PruneEvent, PrunerState
from cpd.surgery import cut_, prepare_
from cpd.surgery.verify import CutTwin, breaking_groups

#: refinement rounds per pruning step (costs are re-estimated after each; usually one or two suffice).
MAX_ROUNDS = 8
#: no step goes more than this share of the original metric past the next threshold, when some removal fits
#: (see ``cpd.prune.schedule.select``): a step that ends on a threshold lands on it.
LANDING = 2e-3
#: re-takes of one step that falls short of its goal or lands past its threshold (each corrects the prediction
#: first, and each is decided on two timings of the model: see the module docstring).
MAX_CORRECTIONS = 4
#: a measured latency sparsity this close below a threshold reaches it (timings on a loaded machine wobble
#: by about this much; without it the pruner would chase the noise past the threshold).
MEASURED_SLACK = 5e-3
#: a timed step that lands more than this past the next threshold gives its removals back and takes again.
OVERSHOOT = 0.02


class Pruner:
    """Masked pruning of ``model`` towards ``config.target`` sparsity.

    Args:
        model: the model; prepared in place (``cpd.prepare_``), masks and hooks are added to it.
        inputs: example inputs of one forward call (for comb, and for MACs with ``metric="flops"``).
        config: the pruning options (default ``PruneConfig()``).
        forward_fn: ``forward_fn(model, *inputs)`` returning every output (default ``model(*inputs)``).
        graph: the model's dependency graph (default: comb the model now).
        macs_inputs: inputs at which MACs are counted (default ``inputs``).
        latency: the measured latency model, needed for ``metric="latency"`` (same fingerprint and groups).
        measure: ``measure(cut copy of the model) -> seconds`` on the latency model's runtime and input
            shape; None: the latency sparsity is the latency model's prediction only.
        latency_forward: what the deployed graph runs (the task's inference forward, no auxiliary heads),
            for the MACs a latency model's MACs line counts; None: ``forward_fn``.

    Raises:
        ValueError: a bad config, a graph made for another architecture, or ``metric="latency"`` without a
            latency model that fits.
    """

    def __init__(self, model: nn.Module, inputs: Sequence[Any] | torch.Tensor, config: PruneConfig | None = None,
                 *, forward_fn: Callable[..., Any] | None = None, graph: DependencyGraph | None = None,
                 macs_inputs: Sequence[Any] | None = None, latency: LatencyModel | None = None,
                 measure: Callable[[nn.Module], float] | None = None,
                 latency_forward: Callable[..., Any] | None = None) -> None:
        config = PruneConfig() if config is None else config
        if not isinstance(config, PruneConfig):
            raise ValueError(f"config must be a PruneConfig, got {type(config).__name__}")
        config.validate()
        inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
        if graph is None:
            graph = comb(model, inputs, forward_fn)
        elif graph.fingerprint != fingerprint(model):
            raise ValueError(f"graph was made for fingerprint {graph.fingerprint}, the model has {fingerprint(model)}")
        prepare_(model)
        self.model, self.graph, self.config, self.forward_fn = model, graph, config, forward_fn
        self.inputs = inputs
        self.macs_inputs = tuple(macs_inputs) if macs_inputs is not None else inputs
        self.groups = graph.prunable()
        if config.metric == "latency":
            if latency is None:
                raise ValueError("metric='latency' needs a latency model: build one with "
                                 "cpd.prune.latency.profile_latency (the pipeline's latency stage) and pass latency=")
            latency.check_fits(graph.fingerprint, groups=[g.id for g in self.groups])
        self.latency = latency if config.metric == "latency" else None
        self.measure_fn = measure if config.metric == "latency" else None
        self.masks = MaskSet(model, self.groups)
        self.saliency = SaliencyAccumulator(model, self.groups,
                                            diagonal=bool(getattr(IMPORTANCES[config.criterion], "needs_diagonal", False)))
        self.rng = np.random.default_rng(config.seed)
        self.importance = build_importance(config.criterion, ImportanceContext(model, self.saliency, self.rng))
        param_macs, total_macs = ({}, 0)
        if config.metric == "flops" or (self.latency is not None and self.latency.overlap == "macs"):
            param_macs, total_macs = count_param_macs(model, self.macs_inputs, forward_fn)
        self.costs = CostModel(model, self.groups, param_macs, total_macs, self.latency)
        self.limits = {g.id: limits_of(g, self.costs.channels[g.id], config.round_to, config.min_keep)
                       for g in self.groups}
        self.original = (float(total_macs) if config.metric == "flops" else self.latency.baseline if self.latency
                         else self.costs.total({}, config.metric))
        #: every latency measurement: iteration, goal, predicted, corrected prediction, measured, seconds.
        self.checks: list[dict[str, Any]] = []
        self.iteration = 0
        self.sparsity = 0.0
        self.reached: list[float] = []
        self.exhausted = False
        #: group id -> why it may lose no more units (its cut broke the model at some step).
        self.frozen: dict[int, str] = {}
        self.history: list[PruneEvent] = []
        #: (predicted, measured sparsity) of the last cut the step knows the sparsity of (see ``estimate``)
        self._anchor = (0.0, 0.0)
        self.materialized = False
        self._pre_prune_hooks: OrderedDict[int, Callable[[SaliencyAccumulator], None]] = OrderedDict()
        self.masks.attach()
        self._norm_hooks = attach_live_norms(model, self.masks)
        #: cut copies of the masked model: the guard of each step, and the exact MACs of ``metric="flops"``.
        self.twin = CutTwin(model, graph, inputs, forward_fn,
                            lambda twin: strip_live_norms_(twin, self._norm_hooks))
        #: the latency model's MACs line, when it has one: the latency sparsity it predicts for a cut
        self.line = (MacsLine(self.twin, self.latency, latency_forward or forward_fn)
                     if self.latency is not None and self.latency.macs_line is not None else None)

    # -- the training loop --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The target is reached, or no group can lose another unit."""
        return self.exhausted or self.sparsity >= self.config.target - self.slack

    @property
    def slack(self) -> float:
        """How far below a threshold the sparsity may be and still reach it (``MEASURED_SLACK`` when timed)."""
        return MEASURED_SLACK if self.measure_fn is not None else EPS

    def accumulate(self) -> None:
        """Add the current gradients (one batch) to the importance; call after every ``backward()``."""
        self._alive()
        if self.importance.needs_gradients:
            self.saliency.update()
        else:
            self.saliency.batches += 1

    def apply_masks_(self) -> None:
        """Zero every parameter and buffer slice of a removed unit (call after ``optimizer.step()``)."""
        self._alive()
        self.masks.apply_()

    def step(self) -> PruneEvent | None:
        """End one training iteration: re-zero dead slices, and prune every ``interval`` iterations.

        Returns:
            The pruning step's event, or None when this iteration did not prune.
        """
        self.apply_masks_()
        self.iteration += 1
        if self.iteration % self.config.interval or self.done:
            return None
        return self.prune_step()

    def attach(self, optimizer: torch.optim.Optimizer) -> list[Any]:
        """Run ``accumulate()`` before and ``step()`` after every ``optimizer.step()``.

        Returns:
            The two hook handles (``.remove()`` them to stop).
        """
        return [optimizer.register_step_pre_hook(lambda *_: self.accumulate()),
                optimizer.register_step_post_hook(lambda *_: self.step())]

    def register_prune_pre_hook(self, hook: Callable[[SaliencyAccumulator], None]) -> RemovableHandle:
        """Run ``hook(saliency)`` at the start of every pruning step, before the units are ranked.

        The hook may change the accumulated saliency in place (under DDP: average it over the ranks, so
        that every rank removes the same units).

        Returns:
            A handle; ``handle.remove()`` unregisters the hook.
        """
        handle = RemovableHandle(self._pre_prune_hooks)
        self._pre_prune_hooks[handle.id] = hook
        return handle

    def removed(self) -> dict[int, list[int]]:
        """``{group id: [dead units]}`` of the groups that lost any so far."""
        return self.masks.removed()

    # -- one pruning step ---------------------------------------------------------------------------
    def scores(self) -> dict[int, np.ndarray]:
        """The criterion's score of every unit of every prunable group (lower goes first).

        Raises:
            ValueError: the criterion returned the wrong number of scores.
        """
        out = {}
        for g in self.groups:
            s = np.asarray(self.importance(g), dtype=np.float64).reshape(-1)
            if s.shape != (g.num_units,):
                raise ValueError(f"criterion {self.config.criterion!r} returned {s.size} scores for group {g.id}, "
                                 f"which has {g.num_units} units")
            out[g.id] = s
        return out

    def prune_step(self) -> PruneEvent:
        """Remove the globally lowest-scoring units: ``step_size`` of the metric, or up to the next threshold.

        Raises:
            RuntimeError: a gradient criterion saw no batch since the last step (``accumulate()`` missing).
        """
        self._alive()
        cfg = self.config
        for hook in list(self._pre_prune_hooks.values()):
            hook(self.saliency)
        if self.importance.needs_gradients and self.saliency.batches == 0:
            raise RuntimeError(f"criterion {cfg.criterion!r} needs pruner.accumulate() after every backward(); "
                               "no batch was accumulated since the last pruning step")
        before, batches = self.sparsity, self.saliency.batches
        # a threshold reached within the slack stays reached, though the sparsity may sit just below it
        upcoming = [t for t in cfg.thresholds if t > before + EPS and t not in self.reached]
        goal = min(before + cfg.step_size, upcoming[0]) if upcoming else before
        scores = self.scores()
        start = self.masks.removed()
        threshold = upcoming[0] if upcoming else None
        self._anchor = (self._predicted() if self.latency is not None else 0.0, before)
        self._guarded_fill(goal, scores, start, threshold)
        if self.measure_fn is None:
            self.sparsity = self.measure()
        else:
            self._timed_step(goal, scores, start, threshold)
        self.saliency.reset()
        crossed = tuple(t for t in upcoming if t <= self.sparsity + self.slack)
        self.reached.extend(crossed)
        predicted = self._predicted() if self.latency is not None else None
        event = PruneEvent(self.iteration, self._step_removals(start), self.sparsity, crossed, self.done, batches,
                           predicted)
        self.history.append(event)
        return event

    def _timed_step(self, goal: float, scores: Mapping[int, np.ndarray], start: Mapping[int, list[int]],
                    threshold: float | None) -> None:
        """Time the step's cut and correct it until the timings say it reaches ``goal`` without going more
        than ``OVERSHOOT`` past ``threshold`` (see the module docstring); ``self.sparsity`` is then what the
        timings decided.  A step whose every cut that reached the goal went past, and whose retakes fell
        short, keeps the least of those past cuts (a removal it cannot take in part), timed once more."""
        start_anchor = self._anchor
        past: list[tuple[float, dict[int, list[int]], tuple[float, float]]] = []  # decided, removed, anchor
        self.sparsity = self.measure(goal)
        repeated = False
        for _ in range(2 * MAX_CORRECTIONS + 1):
            over = threshold is not None and self.sparsity > threshold + OVERSHOOT
            crossing = threshold is not None and self.sparsity >= threshold - self.slack
            if not over and (self.sparsity >= goal - self.slack or self.exhausted) and (repeated or not crossing):
                return
            if not repeated:  # one timing may be a spike: time the same model again, the mean decides
                self._decide(0.5 * (self.sparsity + self.measure(goal)))
                repeated = True
                continue
            repeated = False
            if over:  # give this step's removals back and take again from the cut the step started at
                taken = self._step_removals(start)
                past.append((self.sparsity, self.masks.removed(), self._anchor))
                self._set_removed(start)
                self._anchor, self.exhausted = start_anchor, False
                self._guarded_fill(goal, scores, start, threshold)
                if self._step_removals(start) == taken:  # nothing smaller reaches the goal: keep the cut
                    self.sparsity, _, self._anchor = past[-1]
                    return
            else:
                self._guarded_fill(goal, scores, start, threshold)
            self.sparsity = self.measure(goal)
        if past and self.sparsity < goal - self.slack:
            decided, removed, self._anchor = min(past, key=lambda p: p[0])
            self._set_removed(removed)
            self.exhausted = False
            # timed once more, so that the last measurement is of the model kept; its two timings count twice
            self._decide((2.0 * decided + self.measure(goal)) / 3.0)

    def _decide(self, sparsity: float) -> None:
        """The masks' cut, just timed again, has ``sparsity`` (a mean of its timings): the step goes on from it."""
        self.sparsity = sparsity
        self.checks[-1]["decided"] = sparsity
        self._anchor = (self._anchor[0], sparsity)

    def _set_removed(self, removed: Mapping[int, Sequence[int]]) -> None:
        """Make the masks exactly ``removed`` (``{group: dead units}``)."""
        self.masks.set_({g: np.isin(np.arange(d.size), removed.get(g, [])) for g, d in self.masks.dead.items()})

    def _guarded_fill(self, goal: float, scores: Mapping[int, np.ndarray], start: Mapping[int, list[int]],
                      threshold: float | None) -> None:
        """``_fill`` to ``goal``, then freeze the groups whose removals of this step break the cut model."""
        for _ in range(3):
            self._fill(goal, scores, threshold)
            step = self._step_removals(start)
            bad = {}
            if step and self.twin.breaks(self.masks.removed()):
                bad = breaking_groups(sorted(step), lambda part: self.twin.breaks(_merged(start, step, part)))
            if not bad:
                break
            for gid, why in bad.items():
                warnings.warn(f"group {gid} is frozen: {why}", stacklevel=3)
                self.frozen[gid] = why
            self.masks.set_({g: np.isin(np.arange(self.masks.dead[g].size), start.get(g, [])) for g in bad})

    def _predicted(self, dead: Mapping[int, np.ndarray] | None = None) -> float:
        """The sparsity the cost model predicts (uncorrected): by the MACs line where the latency model has
        one, else by the costs."""
        dead = self.masks.dead if dead is None else dead
        if self.line is not None:
            return self.line(removed_of(dead))
        return self._by_costs(dead)

    def estimate(self, dead: Mapping[int, np.ndarray] | None = None) -> float:
        """The sparsity of a cut (``{group: dead per unit}``; default: the masks) in the metric the fill
        rounds steer by: the anchor's (the last cut whose sparsity is known: measured, or the step's start)
        plus the predicted difference, scaled by the correction."""
        predicted, known = self._anchor
        return known + self.correction * (self._predicted(dead) - predicted)

    def _by_costs(self, dead: Mapping[int, np.ndarray]) -> float:
        return 1.0 - self.costs.total(dead, self.config.metric) / self.original

    @property
    def correction(self) -> float:
        """What later predictions are scaled by: the least-squares factor of every measured over predicted
        sparsity so far (1 before any measurement; bounded: a run of bad timings must not make the pruner
        remove, or keep, four times what it should)."""
        pairs = [(c["predicted"], c["measured"]) for c in self.checks if c["predicted"] > EPS and c["measured"] > EPS]
        k = fit_through_zero([p for p, _ in pairs], [m for _, m in pairs])
        return 1.0 if k is None else float(np.clip(k, 0.25, 4.0))

    def _fill(self, goal: float, scores: Mapping[int, np.ndarray], threshold: float | None = None) -> None:
        """Kill the lowest-scoring removals until the estimated sparsity reaches ``goal`` (costs re-estimated).

        ``threshold``: the next threshold; removals that would take the sparsity more than ``LANDING`` past it
        are passed over (see ``select``), so the step that ends on it lands on it.
        """
        metric = self.config.metric
        # the costs are the cost model's (uncorrected) savings: a corrected sparsity gap is scaled back to them
        scale = self.original / self.correction
        for _ in range(MAX_ROUNDS):
            dead = self.masks.dead
            now = self.estimate(dead) if self.latency is not None else self._predicted(dead)
            view = self._view() if self.line is not None else None
            line = 1.0 if view is None else line_scale(view, dead)  # the costs are the curves', the sparsity the line's
            need = (goal - now) * scale
            if need <= EPS * self.original:
                return
            options = {}
            for g in self.groups:
                if g.id in self.frozen:
                    continue
                costs = self.costs.unit_costs(g, dead, metric)
                weights = costs if self.importance.cost_normalized else np.ones(g.num_units)
                score = scores[g.id]
                if metric == "latency":
                    # a unit the measurements say saves no time is never taken for the speed (it would be
                    # free, and every criterion not divided by the cost would take all of them first)
                    score = np.where(costs > 0, score, np.inf)
                options[g.id] = group_removals(g.id, dead[g.id], score, weights, costs, self.limits[g.id])
            if view is not None:
                picked = line_pick(options, dead, now, need, threshold, scale, line, view)
            else:
                picked = select(options, need, None if threshold is None else (threshold + LANDING - now) * scale)
            if not picked:
                self.exhausted = True
                return
            self.masks.kill_(picked)

    def _view(self) -> LineView:
        """How a pick is judged under the MACs line (see :mod:`cpd.prune.line_pick`)."""
        return LineView(self._predicted, self._by_costs, self.estimate, LANDING,
                        float(self.latency.info.get("line_over_curves", 1.0)))

    def _step_removals(self, start: Mapping[int, list[int]]) -> dict[int, list[int]]:
        now = self.masks.removed()
        out = {g: sorted(set(u) - set(start.get(g, []))) for g, u in now.items()}
        return {g: u for g, u in out.items() if u}

    def measure(self, goal: float | None = None) -> float:
        """The sparsity of the masked model in the metric (MACs by counting the cut model, exactly).

        Latency: with a ``goal`` and a ``measure`` callback, the cut model is timed (and the measurement
        recorded in :attr:`checks`); otherwise the corrected prediction.
        """
        if self.config.metric == "latency":
            predicted = self._predicted()
            if goal is None or self.measure_fn is None:
                return self.correction * predicted
            seconds = float(self.measure_fn(self._cut_copy().eval()))
            measured = 1.0 - seconds / self.original
            self._anchor = (predicted, measured)
            self.checks.append({"iteration": self.iteration, "goal": goal, "predicted": predicted,
                                "corrected": self.correction * predicted, "measured": measured, "seconds": seconds,
                                "decided": measured})
            return measured
        if self.config.metric != "flops":
            return 1.0 - self.costs.total(self.masks.dead, self.config.metric) / self.original
        if not self.masks.removed():
            return 0.0
        macs = count_macs(self.twin.cut(self.masks.removed()), self.twin.run_inputs(self.macs_inputs), self.forward_fn)
        return 1.0 - macs / self.original

    # -- results --------------------------------------------------------------------------------------
    def plan(self) -> dict:
        """The plan of what is removed so far (self-contained: it embeds the dependency graph)."""
        cfg = self.config
        summary = {"metric": cfg.metric, "sparsity": self.sparsity, "criterion": cfg.criterion,
                   "iteration": self.iteration, "original": self.original, "config": cfg.to_dict()}
        if self.latency is not None:
            summary["latency"] = {"runtime": self.latency.runtime, "input_shape": list(self.latency.input_shape),
                                  "baseline_s": self.latency.baseline, "predicted": self._predicted(),
                                  "macs_line": self.latency.macs_line,
                                  "element_rate": self.latency.element_rate,
                                  "correction": self.correction, "checks": [dict(c) for c in self.checks]}
        return make_plan(self.graph, self.masks.removed(), summary)

    def export(self) -> tuple[nn.Module, dict]:
        """A physically pruned copy of the model and its plan; the masked model trains on."""
        self._alive()
        return self._cut_copy(), self.plan()

    def _cut_copy(self) -> nn.Module:
        """A real copy of the masked model with the dead units cut (the masked model is not changed)."""
        pruned = self.twin.copy(meta=False)
        cut_(pruned, self.graph, self.masks.removed())
        return pruned

    def materialize_(self) -> dict:
        """Make the masks physical in place: hooks go, dead units are cut.  Build a new optimizer after.

        Returns:
            The plan.
        """
        self._alive()
        plan = self.plan()
        self.detach()
        cut_(self.model, self.graph, self.masks.removed())
        self.materialized = True
        return plan

    def verify(self, inputs: Sequence[Any] | None = None) -> float:
        """Largest relative difference between the masked model's and the cut copy's eval outputs.

        Args:
            inputs: inputs of one forward call (default: the example inputs).

        Returns:
            ``max |cut - masked| / max |masked|`` over every output (0 when they agree exactly).
        """
        inputs = self.macs_inputs if inputs is None else tuple(inputs)
        pruned, _ = self.export()
        err = 0.0
        for a, b in zip(run_forward(self.model, inputs, self.forward_fn),
                        run_forward(pruned, inputs, self.forward_fn), strict=True):
            if a.shape != b.shape:
                return float("inf")
            if a.is_floating_point() and a.numel():
                err = max(err, float((a - b).abs().max()) / max(float(a.abs().max()), 1e-12))
        return err

    def detach(self) -> None:
        """Remove the gradient and normalisation hooks (the masks stop being enforced)."""
        self.masks.detach()
        for h in self._norm_hooks:
            h.remove()
        self._norm_hooks = []

    def _alive(self) -> None:
        if self.materialized:
            raise RuntimeError("this pruner's model was materialized; the pruner can no longer change it")

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Masks, accumulated saliency, iteration, sparsity, thresholds reached and the generator state."""
        return PrunerState(
            fingerprint=self.graph.fingerprint, criterion=self.config.criterion, metric=self.config.metric,
            iteration=self.iteration, sparsity=float(self.sparsity), reached=list(self.reached),
            exhausted=self.exhausted, frozen=dict(self.frozen), dead=self.masks.removed(),
            saliency=self.saliency.state_dict(), rng=self.rng.bit_generator.state, history=list(self.history),
            correction=self.correction, checks=[dict(c) for c in self.checks],
        ).to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (before or after loading the model's weights: masks are re-applied).

        Raises:
            ValueError: the state belongs to another architecture, criterion or set of groups.
        """
        self._alive()
        s = PrunerState.from_dict(state)
        s.check_fits(self.graph.fingerprint, self.config.criterion, self.config.metric,
                     {gid: len(d) for gid, d in self.masks.dead.items()})
        backup = self.saliency.state_dict()
        try:
            self.saliency.load_state_dict(s.saliency)
        except (KeyError, ValueError):
            self.saliency.load_state_dict(backup)
            raise
        dead = {gid: np.zeros(len(d), dtype=bool) for gid, d in self.masks.dead.items()}
        for gid, units in s.dead.items():
            dead[gid][units] = True
        self.masks.set_(dead)
        self.rng.bit_generator.state = s.rng
        self.iteration, self.sparsity, self.reached = s.iteration, s.sparsity, list(s.reached)
        self.exhausted, self.frozen, self.history = s.exhausted, dict(s.frozen), list(s.history)
        self.checks = [dict(c) for c in s.checks]  # the correction follows from them


def _merged(before: Mapping[int, Sequence[int]], step: Mapping[int, Sequence[int]],
            part: Sequence[int]) -> dict[int, list[int]]:
    """The units dead before a step plus the step's removals in the groups of ``part``."""
    out = {g: list(u) for g, u in before.items()}
    for g in part:
        out[g] = sorted(set(out.get(g, [])) | set(step[g]))
    return out
