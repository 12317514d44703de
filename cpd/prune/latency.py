"""Build a :class:`cpd.importance.latency.LatencyModel` by measurement, and measure what ``round_to`` is worth.

The core never times anything itself: the caller passes ``measure(model) -> seconds``, which runs a cut
copy on the deployment runtime (``cpd.export.onnx_latency`` exports it and times it with onnxruntime;
a test passes a deterministic function of the cut model).  What happens here is the plan of the
measurements: per prunable group, real copies of the model with only that group cut to a few widths
(``fractions`` of its full width, and with ``floor`` its narrowest reachable width, reached by the
schedule's own removals, so the widths respect ``round_to`` and the floors), each measured once; the
baseline is measured first.  The floor matters: the schedule often drives a group to it, and a curve
extrapolated below its narrowest measured point there predicted SegFormer-B0 at 512x512 11-14% slow.

*Noise.*  On a shared machine one group's effect on the whole model's time is often smaller than the timing
noise (a backbone layer of a model whose time sits in its decode head), and a sum of twenty noisy savings
predicts nonsense.  With ``macs`` (``macs(model) -> MACs``), the baseline is measured ``repeats`` times and
every point gets a *prior* ``baseline - rate * (MACs saved)``, ``rate`` the least-squares seconds per MAC over
every single-group point.  Where the noise buries every single-group saving, that fit comes out at zero or
below, and a prior of zero would tell the pruner that nothing saves time (on a loaded machine a tiny model's
profile then pruned nothing at all); the rate then comes from the whole-model cuts of ``joint``, which
remove far more work than the noise, and failing those it is ``baseline / MACs`` (``info["points"]["rate_from"]``
says which).  The noise ``sigma`` is the largest of the baseline repeats' spread, the robust spread
of the points around their priors (``1.4826 * MAD``) and ``min_noise`` of the baseline.  A point within
``3 * sigma`` of its prior takes the prior (the measurement cannot tell them apart, and the prior is smooth
and additive); a point outside is measured ``retries`` more times and, if the median of its measurements
is still outside, keeps that median (the runtime differs from MACs there: a memory-bound layer, an
attention product).  Every decision is kept in ``info["points"]``.

*Interaction.*  Single-group savings do not add up to what cutting every group at once saves: measured at
512x512 on onnxruntime CPU, whole-model cuts saved 0.57 to 0.96 times the sum on four CNNs.  Most
of it is structure: a layer between two cut groups loses ``1 - (1 - a)(1 - b)`` of its work, not ``a + b``.
With ``param_macs`` (``param_macs(model) -> (MACs per parameter, total MACs)``,
:func:`cpd.flops.count_param_macs` at the deployment input), every prediction takes that *overlap* ``o`` from
the MACs (:meth:`cpd.importance.CostModel.overlap`); the latency model says so (``overlap: "macs"``).  With
``joint``, the model is also measured with *every* group cut at once to each of the ``fractions``; the
interaction ``k`` is the least-squares factor (through zero) of those measured savings over ``o`` times
their additive predictions, bounded to [0.25, 4], and every prediction and unit cost of the latency model
is scaled by it.  The points are kept in ``info["joint"]``.  With ``macs`` too, each point also keeps the
share of the counted MACs its cut saves, and the model gets its *MACs line* ``b`` (:func:`fit_macs_line`;
:mod:`cpd.importance.latency`), the slope through the baseline of those savings over those shares.  With
``elements`` too (``elements(model) -> elements``, :func:`cpd.flops.count_work`), every cut timed, single-group
and whole-model, keeps its shares of MACs and of elements saved, and the line gets a second rate: ``b`` and
the *element rate* ``c`` are the least-squares fit through the baseline of every cut's saving over
``b * s + c * e`` (:func:`with_element_rate`).  The uniform whole-model cuts alone cannot tell the two apart
(their MACs and elements shrink together); the single-group cuts can (an FFN's cut saves MACs, an attention
heads' cut saves the softmax's elements too).  A fit with a rate that is not positive keeps the line of MACs
alone (``info["work_rates"]`` says why).

``round_to``: on the group whose curve is steepest, widths ``W``, ``W - 1``, ``W - 8``, ``W - 16`` and
``W - 32`` (``W`` a multiple of 32) are measured.  Those between ``W`` and ``W - 32`` should lie on the line
between the two; the excess of a width over that line is what its misalignment costs.  The suggestion
is the smallest of 1, 8, 16, 32 such that no width aligned to it (or to a larger multiple) costs more
than ``tolerance`` of the baseline.  It is only reported: the user's ``round_to`` is never changed.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from cpd.graph.group import DependencyGraph, Group
from cpd.importance.cost import CostModel, channels_per_unit
from cpd.importance.latency import GroupCurve, LatencyModel, fit_through_zero
from cpd.prune.schedule import group_removals, limits_of
from cpd.surgery import cut_, prepare_

Measure = Callable[[nn.Module], float]
#: widths measured per group, as fractions of its full width (the nearest width the schedule allows).
FRACTIONS = (0.25, 0.5, 0.75)
#: the fraction that stands for a group's floor, its narrowest reachable width (``floor=True``)
FLOOR = 0.0
ALIGNMENTS = (1, 8, 16, 32)


def widths_reachable(group: Group, round_to: int, min_keep: float) -> list[tuple[int, list[int]]]:
    """Every width the schedule can cut ``group`` to, narrowest last, with the units removed to get there.

    Units are taken from the end of the group (which units go does not change the time, only how many).
    """
    channels = channels_per_unit(group)
    limits = limits_of(group, channels, round_to, min_keep)
    n = group.num_units
    removals = group_removals(group.id, np.zeros(n, dtype=bool), -np.arange(n, dtype=np.float64), np.ones(n),
                              np.zeros(n), limits)
    out, gone = [], []
    full = int(channels.sum())
    for r in removals:
        gone = gone + list(r.units)
        out.append((full - int(channels[gone].sum()), sorted(gone)))
    return out


def cut_copy(model: nn.Module, graph: DependencyGraph, removed: Mapping[int, Sequence[int]]) -> nn.Module:
    """A real (not meta) copy of ``model`` in eval mode with ``removed`` (``{group: units}``) cut."""
    twin = copy.deepcopy(model)
    prepare_(twin)
    cut_(twin, graph, {g: list(u) for g, u in removed.items() if len(u)})
    return twin.eval()


def profile_latency(model: nn.Module, graph: DependencyGraph, measure: Measure, runtime: str,
                    input_shape: Sequence[int], *, round_to: int = 8, min_keep: float = 0.1,
                    fractions: Sequence[float] = FRACTIONS, align: bool = True, tolerance: float = 0.01,
                    macs: Callable[[nn.Module], float] | None = None, repeats: int = 3, min_noise: float = 0.01,
                    retries: int = 2, joint: bool = True,
                    param_macs: Callable[[nn.Module], tuple[Mapping[str, int], int]] | None = None,
                    floor: bool = True, elements: Callable[[nn.Module], float] | None = None,
                    info: Mapping[str, Any] | None = None,
                    log: Callable[[str], None] | None = None) -> LatencyModel:
    """Measure how each prunable group's width changes the latency of the whole model.

    Args:
        model: the unpruned model (not changed; copies are cut).
        graph: its dependency graph (``comb``).
        measure: ``measure(cut copy) -> seconds`` on the deployment runtime at ``input_shape``.
        runtime: the runtime's name, kept in the model and checked by its users (``onnxruntime-cpu``, ...).
        input_shape: the deployment input shape, batch included (recorded; ``measure`` uses it).
        round_to, min_keep: the pruning run's, so the measured widths are widths the run can reach.
        fractions: the widths to measure per group, as fractions of its full width, in (0, 1).
        align: also measure what ``round_to`` is worth (module docstring); the result goes to ``info``.
        tolerance: for the ``round_to`` suggestion, the excess (share of the baseline) that counts.
        macs: ``macs(cut copy) -> MACs`` at the deployment input; None: every point is its measurement.
        repeats: with ``macs``, measurements of the baseline that give the noise (>= 2 for a spread).
        min_noise: the least noise assumed, as a share of the baseline.
        retries: with ``macs``, extra measurements of a point outside the noise of its prior.
        joint: also measure whole-model cuts (every group at each fraction) and fit the interaction.
        param_macs: ``param_macs(model) -> (MACs per parameter name, total MACs)`` at the deployment input;
            the predictions then take the MACs overlap of the cut (module docstring).  None: ``o = 1``.
        floor: also measure each group at the narrowest width the schedule can reach (``min_keep`` and
            ``round_to``), and the whole model with every group there (a joint point of fraction 0), so
            that a cut down to the floor is read off a measured point instead of an extrapolation.
        elements: ``elements(cut copy) -> elements`` at the deployment input; with ``macs`` and ``joint``,
            the MACs line gets an element rate (module docstring).  None: a line of MACs alone.
        info: recorded with the model (how ``measure`` times: threads, runs, versions).
        log: called with a line per group measured (None: silent).

    Returns:
        The latency model.

    Raises:
        ValueError: a fraction outside (0, 1), or ``measure`` returned a time that is not positive.
    """
    bad = [f for f in fractions if not 0.0 < f < 1.0]
    if bad or not fractions:
        raise ValueError(f"fractions={list(fractions)}: each must be in (0, 1)")

    counted: dict[tuple, float] = {}
    written: dict[tuple, float] = {}  # elements, keyed as ``counted``

    def timed(removed: Mapping[int, Sequence[int]]) -> float:
        cut = cut_copy(model, graph, removed)
        seconds = float(measure(cut))
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"measure returned {seconds!r} seconds; it must return the positive latency of the model")
        if macs is not None:
            counted[_key(removed)] = float(macs(cut))
        if elements is not None:
            written[_key(removed)] = float(elements(cut))
        return seconds

    repeated = [timed({}) for _ in range(max(1, repeats) if macs is not None else 1)]
    baseline = float(np.median(repeated))
    curves: dict[int, GroupCurve] = {}
    raw: dict[int, dict[int, float]] = {}
    targets = ([FLOOR] if floor else []) + sorted(set(fractions))  # FLOOR: the narrowest width reachable
    at_fraction: dict[float, dict[int, tuple[int, list[int]]]] = {f: {} for f in targets}
    for g in graph.prunable():
        full = int(channels_per_unit(g).sum())
        reachable = widths_reachable(g, round_to, min_keep)
        chosen: dict[int, list[int]] = {}
        for f in targets:
            if reachable:
                width, units = width_at(reachable, full, f)
                chosen[width] = units
                at_fraction[f][g.id] = (width, units)
        points = {w: timed({g.id: units}) for w, units in sorted(chosen.items())}
        raw[g.id] = dict(points)
        if macs is not None:
            for w, units in chosen.items():
                counted[(g.id, w)] = counted.pop(((g.id, len(units)),))
                if elements is not None:
                    written[(g.id, w)] = written.pop(((g.id, len(units)),))
        points[full] = baseline
        curves[g.id] = GroupCurve(tuple(points), tuple(points.values()))
        if log is not None:
            log(f"group {g.id}: width {full} -> " + ", ".join(f"{w}: {s * 1e3:.3f} ms" for w, s in points.items()))
    # the whole-model cuts are measured before the prior, which falls back on them (module docstring)
    wide = {f: {g: u for g, (_, u) in chosen.items()} for f, chosen in sorted(at_fraction.items()) if chosen}
    wide_seconds: dict[tuple, float] = {}
    for removed in wide.values() if joint else ():
        if _key(removed) not in wide_seconds:  # two fractions at the same widths are one cut
            wide_seconds[_key(removed)] = timed(removed)
    details = dict(info or {})
    if macs is not None:
        chosen_by = {g.id: {w: u for w, u in widths_reachable(g, round_to, min_keep)} for g in graph.prunable()}
        fallback = [(counted[()] - counted[key], baseline - s) for key, s in wide_seconds.items()]
        curves, details["points"] = with_prior(curves, raw, counted, baseline, repeated, min_noise,
                                               lambda g, w: timed({g: chosen_by[g][w]}), retries, fallback)
    overlap = None
    if param_macs is not None:
        overlap = overlap_of(CostModel(model, graph.prunable(), *param_macs(model)), graph)
    lm = LatencyModel(graph.fingerprint, runtime, tuple(input_shape), baseline, curves, details,
                      overlap="macs" if overlap is not None else "none")
    if joint:
        share = None if macs is None else lambda removed: 1.0 - counted[_key(removed)] / counted[()]
        lm = with_interaction(lm, at_fraction, lambda removed: wide_seconds[_key(removed)], log, overlap, share)
        if elements is not None and macs is not None and lm.macs_line is not None:
            def saved(key: tuple) -> dict[str, float]:
                return {"macs_share_saved": 1.0 - counted[key] / counted[()],
                        "elements_share_saved": 1.0 - written[key] / written[()]}
            joint_points = [{**p, **saved(_key(wide[p["fraction"]]))} for p in lm.info["joint"]]
            singles = [{**saved((g, w)), "saving": (baseline - s) / baseline} for g, pts in raw.items()
                       for w, s in pts.items()]
            lm = with_element_rate(replace(lm, info={**lm.info, "joint": joint_points}), singles)
    if align:
        lm = replace(lm, info={**lm.info, "round_to": measure_alignment(graph, lm, timed, tolerance)})
    return lm


Removed = Mapping[int, Sequence[int]]


def _key(removed: Removed) -> tuple[tuple[int, int], ...]:
    """A cut's key: ``((group, units removed), ...)`` in group order."""
    return tuple(sorted((g, len(u)) for g, u in removed.items()))


def width_at(reachable: Sequence[tuple[int, list[int]]], full: int, fraction: float) -> tuple[int, list[int]]:
    """The reachable ``(width, units removed)`` nearest ``fraction`` of ``full`` (the narrower on a tie; the
    floor for :data:`FLOOR`): the width the profile measures a group at for that fraction."""
    return min(reachable, key=lambda wu: (abs(wu[0] - fraction * full), wu[0]))


def overlap_of(costs: CostModel, graph: DependencyGraph) -> Callable[[Removed], float]:
    """``overlap({group: units removed}) -> o``, the MACs overlap of that cut (:meth:`CostModel.overlap`)."""
    sizes = {g.id: g.num_units for g in graph.prunable()}
    return lambda removed: costs.overlap({g: np.isin(np.arange(sizes[g]), list(u)) for g, u in removed.items()})


def with_interaction(lm: LatencyModel, at_fraction: Mapping[float, Mapping[int, tuple[int, list[int]]]],
                     timed: Callable[[Removed], float], log: Callable[[str], None] | None = None,
                     overlap: Callable[[Removed], float] | None = None,
                     macs_share: Callable[[Removed], float] | None = None) -> LatencyModel:
    """``lm`` with its interaction fitted on whole-model cuts (module docstring), and with ``macs_share`` its
    MACs line.

    Args:
        lm: the additive latency model (its ``interaction`` and ``macs_line`` are ignored).
        at_fraction: per fraction, ``{group: (width, units removed)}`` for every group.
        timed: ``timed({group: units}) -> seconds`` of the cut copy.
        overlap: ``overlap({group: units}) -> o`` for a model whose ``overlap`` is ``"macs"``; None: 1.
        macs_share: ``macs_share({group: units}) -> s``, the share of the counted MACs that cut saves; None:
            no line (the model predicts from its curves).
    """
    points = []
    for f, chosen in sorted(at_fraction.items()):
        if not chosen:
            continue
        removed = {g: u for g, (_, u) in chosen.items()}
        additive = lm.additive_saving({g: w for g, (w, _) in chosen.items()})
        o = float(overlap(removed)) if overlap is not None else 1.0
        measured = lm.baseline - timed(removed)
        points.append({"fraction": f, "additive_saving_s": additive, "overlap": o, "measured_saving_s": measured})
        if macs_share is not None:
            points[-1]["macs_share_saved"] = float(macs_share(removed))
        if log is not None:
            where = "its floor" if f == FLOOR else f"{f:.2f} of its width"
            log(f"every group at {where}: {measured * 1e3:.3f} ms saved, {additive * 1e3:.3f} ms "
                f"the sum of the single-group savings, MACs overlap {o:.3f}")
    k = fit_interaction(points)
    info = {**lm.info, "joint": points}
    line = fit_macs_line(points, lm.baseline) if macs_share is not None else None
    if line is not None:
        info["line_over_curves"] = line_over_curves(points, k, line, lm.baseline)
    return replace(lm, interaction=k, macs_line=line, info=info)


def line_over_curves(points: Sequence[Mapping[str, float]], interaction: float, line: float,
                     baseline: float, element_rate: float = 0.0) -> float:
    """What the MACs line says the joint cuts save over what the curves say (``k * o * additive``): the
    pruner's first scale of the curves' unit costs to the line, before its own cut gives it one (1 where the
    curves say nothing is saved)."""
    curves = sum(interaction * p["overlap"] * p["additive_saving_s"] for p in points)
    by_line = sum(line * p["macs_share_saved"] + element_rate * p.get("elements_share_saved", 0.0) for p in points)
    return by_line * baseline / curves if curves > 0 else 1.0


def fit_work_rates(points: Sequence[Mapping[str, float]]) -> tuple[float, float] | None:
    """``(b, c)``: the least-squares rates through the baseline of ``saving ~ b * s + c * e`` over points with
    ``saving`` (a share of the baseline), ``macs_share_saved`` (``s``) and ``elements_share_saved`` (``e``);
    None when the points cannot separate the two (fewer than three, or collinear) or a rate is not positive."""
    a = np.array([[p["macs_share_saved"], p["elements_share_saved"]] for p in points], dtype=np.float64)
    y = np.array([p["saving"] for p in points], dtype=np.float64)
    if len(points) < 3 or np.linalg.matrix_rank(a) < 2:
        return None
    (b, c), *_ = np.linalg.lstsq(a, y, rcond=None)
    return (float(b), float(c)) if b > 0 and c > 0 else None


def with_element_rate(lm: LatencyModel, singles: Sequence[Mapping[str, float]]) -> LatencyModel:
    """``lm`` with its MACs line refitted beside an element rate on ``singles`` (the single-group cuts, as
    :func:`fit_work_rates` takes them) and its joint cuts (``info["joint"]`` with ``macs_share_saved`` and
    ``elements_share_saved``); unchanged but for ``info["work_rates"]`` where the fit gives no positive pair."""
    joint = [p for p in lm.info.get("joint", ()) if "elements_share_saved" in p and "macs_share_saved" in p]
    points = list(singles) + [{**p, "saving": p["measured_saving_s"] / lm.baseline} for p in joint]
    rates = fit_work_rates(points)
    report: dict[str, Any] = {"points": len(points), "line_alone": lm.macs_line}
    if rates is None:
        return replace(lm, info={**lm.info, "work_rates": {**report, "fitted": False,
                                                            "why": "no positive pair of rates fits the cuts"}})
    b, c = rates
    info = {**lm.info, "work_rates": {**report, "fitted": True, "macs": b, "elements": c},
            "line_over_curves": line_over_curves(joint, lm.interaction, b, lm.baseline, c)}
    return replace(lm, macs_line=b, element_rate=c, info=info)


def fit_macs_line(points: Sequence[Mapping[str, float]], baseline: float) -> float | None:
    """``b``: the least-squares slope through the baseline of the joint cuts' measured savings (shares of
    ``baseline``) over the shares of the counted MACs they save (``macs_share_saved``); None without a
    point that saves MACs or with a slope that is not positive."""
    pairs = [(p["macs_share_saved"], p["measured_saving_s"] / baseline) for p in points
             if p.get("macs_share_saved") is not None]
    b = fit_through_zero([s for s, _ in pairs], [m for _, m in pairs]) if pairs else None
    return float(b) if b is not None and b > 0 else None


def fit_interaction(points: Sequence[Mapping[str, float]]) -> float:
    """``k``: the least-squares factor through zero of the joint cuts' measured savings over ``overlap``
    times their additive savings, bounded to [0.25, 4] (1 without a point that saves anything)."""
    k = fit_through_zero([p["additive_saving_s"] * p.get("overlap", 1.0) for p in points],
                         [p["measured_saving_s"] for p in points])
    return float(np.clip(k, 0.25, 4.0)) if k is not None and k > 0 else 1.0


def with_prior(curves: Mapping[int, GroupCurve], raw: Mapping[int, Mapping[int, float]],
               counted: Mapping[Any, float], baseline: float, repeated: Sequence[float], min_noise: float,
               retime: Callable[[int, int], float] | None = None, retries: int = 2,
               fallback: Sequence[tuple[float, float]] = ()) -> tuple[dict[int, GroupCurve], dict[str, Any]]:
    """The curves with every point the noise cannot tell from the MACs prior replaced by it (module docstring).

    Args:
        fallback: ``(MACs saved, seconds saved)`` of the whole-model cuts, for the rate when the single-group
            points give none above zero.

    Returns:
        The new curves, and what was decided: noise, rate (and where it came from), and per group its
        widths, measured, prior and used seconds.
    """
    full_macs = counted[()]
    pairs = [(full_macs - counted[(g, w)], baseline - s) for g, pts in raw.items() for w, s in pts.items()]
    dm = np.array([p[0] for p in pairs], dtype=np.float64)
    ds = np.array([p[1] for p in pairs], dtype=np.float64)
    rate, rate_from = fit_through_zero(dm, ds) or 0.0, "single-group cuts"
    if rate <= 0 and fallback:
        rate, rate_from = fit_through_zero([m for m, _ in fallback], [s for _, s in fallback]) or 0.0, \
            "whole-model cuts"
    if rate <= 0:
        rate, rate_from = baseline / full_macs if full_macs > 0 else 0.0, "baseline / MACs"
    residuals = ds - rate * dm
    mad = 1.4826 * float(np.median(np.abs(residuals - np.median(residuals)))) if len(residuals) else 0.0
    sigma = max(float(np.std(repeated)), mad, min_noise * baseline)
    out: dict[int, GroupCurve] = {}
    report: dict[str, Any] = {"noise_s": sigma, "rate_s_per_mac": rate, "rate_from": rate_from,
                              "baseline_repeats": list(repeated), "groups": {}}
    for g, curve in curves.items():
        used, entry = [], {"widths": list(curve.widths), "measured": [], "prior": [], "used": []}
        for w, s in zip(curve.widths, curve.seconds):
            if w not in raw[g]:  # the full width: the baseline
                used.append(s)
                continue
            prior = baseline - rate * (full_macs - counted[(g, w)])
            if abs(s - prior) > 3 * sigma and retime is not None and retries > 0:
                s = float(np.median([s] + [retime(g, w) for _ in range(retries)]))  # a spike, or real?
            pick = prior if abs(s - prior) <= 3 * sigma else s
            used.append(max(pick, 1e-9))
            entry["measured"].append(s)
            entry["prior"].append(prior)
            entry["used"].append(used[-1])
        out[g] = GroupCurve(curve.widths, tuple(used))
        report["groups"][str(g)] = entry
    return out, report


def measure_alignment(graph: DependencyGraph, lm: LatencyModel,
                      timed: Callable[[Mapping[int, Sequence[int]]], float], tolerance: float) -> dict[str, Any]:
    """What misaligned widths cost on the steepest group wide enough (module docstring).

    Returns:
        ``{"group", "widths", "seconds", "excess": {alignment: share of the baseline}, "suggested"}``, or
        ``{"suggested": None, "why": ...}`` when no group of single-channel units is 64 channels wide.
    """
    best: tuple[float, Group] | None = None
    for g in graph.prunable():
        ch = channels_per_unit(g)
        if g.kind == "head" or (ch != 1).any() or g.num_units < 64 or g.id not in lm.groups:
            continue
        slope = float(lm.unit_costs(g.id, g.num_units, np.full(32, 1.0)).sum())
        if best is None or slope > best[0]:
            best = (slope, g)
    if best is None:
        return {"suggested": None, "why": "no prunable group of single channels is 64 or more wide"}
    g = best[1]
    top = (g.num_units // 32) * 32  # the widest multiple of 32; at least 64, so top - 32 stays above a floor
    widths = [top - 32, top - 16, top - 8, top - 1, top]
    seconds = {w: timed({g.id: list(range(w, g.num_units))}) for w in widths}
    lo, hi = seconds[top - 32], seconds[top]
    excess: dict[int, float] = {}
    for w in widths[1:-1]:
        line = lo + (hi - lo) * (w - (top - 32)) / 32
        a = max(r for r in ALIGNMENTS if w % r == 0)
        excess[a] = max(excess.get(a, 0.0), (seconds[w] - line) / lm.baseline)
    suggested = next(r for r in ALIGNMENTS if all(e <= tolerance for a, e in excess.items() if a >= r))
    return {"group": g.id, "widths": widths, "seconds": [seconds[w] for w in widths],
            "excess": {str(a): e for a, e in sorted(excess.items())}, "suggested": suggested,
            "tolerance": tolerance}
