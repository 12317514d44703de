"""Prune mmseg architectures to a measured speed target; write the ``latency`` section of docs/benchmarks.md.

Per architecture (random weights, 512x512, batch 1, onnxruntime CPU, one thread): the latency model is
measured (``cpd.prune.latency.profile_latency`` through ``cpd.mm.latency_meter``), then the model is pruned
with the ``magnitude`` criterion (no training: the question is the speed, not the accuracy) three ways:

- ``metric="latency"`` to the speed targets (sparsity ``1 - 1 / speed-up``), re-measured at each threshold;
- ``metric="params"`` and ``metric="flops"`` through a ladder of sparsities, to find what each needs for the
  same speed.

At the end the baseline and every pruned model are timed together, in alternating blocks
(:func:`cpd.export.compare_latency`), and speed-ups are ratios of medians from that one session.

    python benchmarks/latency.py [--arch SegFormer-B0 PSPNet-R18] [--runs 6] [--final-runs 12]

Results are kept per architecture in benchmarks/results/latency.json: a run of some architectures replaces
theirs and keeps the others'; the docs table holds every architecture the file holds.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import machine, update_section, write_results  # noqa: E402

ARCHS = {"SegFormer-B0": "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
         "PSPNet-R18": "pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py",
         "STDC1": "stdc/stdc1_4xb12-80k_cityscapes-512x1024.py",
         "DeiT-S/UperNet": "vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py",
         "Swin-T/UperNet": "swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py",
         "BiSeNetV2": "bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py",
         "Fast-SCNN": "fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py"}
#: the six of the table, cheapest first (a run that is stopped keeps the finished ones)
DEFAULT = ("SegFormer-B0", "BiSeNetV2", "STDC1", "PSPNet-R18", "DeiT-S/UperNet", "Swin-T/UperNet")
TARGETS = (1.5, 2.0)
LADDER = {"params": (0.2, 0.35, 0.5, 0.65, 0.8), "flops": (0.2, 0.35, 0.5, 0.65, 0.8)}
SIZE = (512, 512)


def prune_run(model, graph, inputs, forward, metric, thresholds, lm=None, meter=None, log=print, infer=None):
    """Prune a copy of ``model`` to each threshold with ``magnitude``; the cut model and facts at each
    (``infer``: what inference runs, for the MACs line of the latency model)."""
    from cpd.prune import PruneConfig, Pruner

    cfg = PruneConfig(criterion="magnitude", metric=metric, thresholds=tuple(thresholds), interval=1,
                      step_fraction=0.1, round_to=8, min_keep=0.1)
    pruner = Pruner(copy.deepcopy(model), inputs, cfg, forward_fn=forward, graph=graph, latency=lm, measure=meter,
                    latency_forward=infer)
    out = {}
    for _ in range(200):
        if pruner.done:
            break
        pruner.accumulate()
        event = pruner.step()
        if event is None:
            continue
        for t in event.crossed:
            cut, plan = pruner.export()
            widths = {g.id: (int(pruner.costs.width(g.id, pruner.masks.dead)), int(pruner.costs.channels[g.id].sum()))
                      for g in pruner.groups}
            out[t] = {"model": cut.eval(), "sparsity": event.sparsity, "predicted": event.predicted,
                      "checks": [dict(c) for c in pruner.checks], "widths": widths}
            log(f"  {metric} {t:.3f}: sparsity {event.sparsity:.4f}"
                + (f" (predicted {event.predicted:.4f})" if event.predicted is not None else ""))
    return out, pruner


def kept_shares(widths: dict) -> dict:
    shares = {g: w / full for g, (w, full) in widths.items()}
    values = np.array(list(shares.values()))
    return {"min": float(values.min()), "median": float(np.median(values)),
            "below_0.3": sorted(g for g, s in shares.items() if s < 0.3), "per_group": shares}


def bench(name: str, config: str, args: argparse.Namespace) -> dict:
    from cpd import comb
    from cpd.export import compare_latency
    from cpd.flops import count_macs, count_params
    from cpd.mm import build_model, example_inputs, load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.latency import cpu_copy
    from cpd.mm.latency_meter import make_meter
    from cpd.mm.tasks import task_of
    from cpd.prune.latency import profile_latency

    quiet_console()
    start = time.perf_counter()
    cfg = load_config(config)
    task = task_of(cfg)
    model = build_model(cfg, input_size=SIZE).eval()
    inputs = (example_inputs(model, size=SIZE, batch=2),)
    graph = comb(model, inputs, forward_fn=task.train_forward)
    shape = [1, 3, *SIZE]
    meter = make_meter(model, task.infer_forward, shape, "onnxruntime-cpu", 1, args.warmup, args.runs, args.rounds)
    print(f"{name}: {len(graph.prunable())} prunable groups, reference {meter.baseline * 1e3:.1f} ms "
          f"({meter.exporter} export)", flush=True)
    old = {r["arch"]: r for r in args.previous}.get(name)
    if old is not None:  # --reuse: the latency model of the last run (same architecture), not measured again
        lm = reused_model(old["latency_model"], cpu_copy(model), graph, meter)
        lm.check_fits(graph.fingerprint, meter.runtime, shape, [g.id for g in graph.prunable()])
        meter.count = old["profile_measurements"]
    else:
        lm = profile_latency(cpu_copy(model), graph, meter, meter.runtime, shape, round_to=8, min_keep=0.1,
                             fractions=tuple(args.fractions), align=False, macs=meter.macs,
                             param_macs=meter.param_macs, elements=meter.elements, info=meter.info)
    meter.baseline = lm.baseline  # measurements are then 1 - time / reference time in the latency model's terms
    profiled = time.perf_counter() - start
    print(f"  latency model: {meter.count} measurements, {profiled:.0f} s", flush=True)
    targets = [1.0 - 1.0 / t for t in TARGETS]
    runs = {"latency": prune_run(model, graph, inputs, task.train_forward, "latency", targets, lm, meter,
                                 infer=task.infer_forward)[0]}
    for metric, ladder in LADDER.items():
        runs[metric] = prune_run(model, graph, inputs, task.train_forward, metric, ladder)[0]
    with tempfile.TemporaryDirectory(prefix="cpd-bench-latency-") as tmp:
        paths = {"baseline": meter._export(cpu_copy(model), "baseline.onnx")}
        for metric, done in runs.items():
            for t, r in done.items():
                paths[f"{metric}@{t:.3f}"] = meter._export(r["model"], f"{metric}_{t:.3f}.onnx")
        timing = compare_latency(paths, shape, args.warmup, args.final_runs, args.final_rounds, "cpu", 1)
    base_ms = timing["baseline"]["median_ms"]
    x1 = torch.randn(*shape)
    base_macs, base_params = count_macs(model, (x1,), task.infer_forward), count_params(model)
    rows = {}
    for metric, done in runs.items():
        for t, r in done.items():
            key = f"{metric}@{t:.3f}"
            row = {"metric": metric, "threshold": t, "sparsity": r["sparsity"],
                   "speedup": base_ms / timing[key]["median_ms"], "median_ms": timing[key]["median_ms"],
                   "macs_ratio": base_macs / count_macs(r["model"], (x1,), task.infer_forward),
                   "params_ratio": base_params / count_params(r["model"]), "kept": kept_shares(r["widths"])}
            if metric == "latency":
                row["predicted_speedup"] = 1.0 / (1.0 - r["predicted"])
                row["measured_in_run"] = 1.0 / (1.0 - r["sparsity"])
                row["checks"] = r["checks"]
            rows[key] = row
    return {"arch": name, "config": config, "groups": len(graph.prunable()), "baseline_ms": base_ms,
            "baseline_macs": base_macs, "baseline_params": base_params, "latency_model": lm.to_dict(),
            "profile_measurements": meter.count, "rows": rows, "seconds": time.perf_counter() - start,
            "args": {k: getattr(args, k) for k in ("runs", "rounds", "warmup", "final_runs", "final_rounds",
                                                    "fractions")}}


def reused_model(doc: dict, model, graph, meter):
    """The stored latency model, brought up to what ``profile_latency`` now fits from the same timings
    (nothing is timed again, only counted):

    - version 2 (interaction fitted without the MACs overlap): each stored whole-model cut gets its overlap,
      computed from the structure, and the interaction is fitted again over them;
    - without a MACs line (versions 2 and 3): each stored whole-model cut gets the share of the counted MACs
      it saves (``meter.macs``, what inference runs at the deployment input), and the line is fitted;
    - timed on another machine or load (its baseline more than 5% from ``meter.baseline``, the reference
      timed at the start of this run): every time is scaled by the ratio of the two, so the file's times are
      this run's.  The sparsities were right either way (the meter times a candidate against its reference
      and returns ``baseline * ratio``, and ``bench`` gives it the latency model's baseline); curves, line
      and interaction are shares of the baseline and keep their shape.
    """
    from dataclasses import replace

    from cpd.importance import CostModel
    from cpd.importance.cost import channels_per_unit
    from cpd.importance.latency import LATENCY, GroupCurve, LatencyModel
    from cpd.prune.latency import (cut_copy, fit_interaction, fit_macs_line, line_over_curves, overlap_of, width_at,
                                   widths_reachable)

    old = doc.get("version")
    lm = LatencyModel.from_dict({**doc, "version": LATENCY.version, **({"overlap": "macs"} if old == 2 else {})})
    cuts = []
    for p in lm.info["joint"]:
        removed = {}
        for g in graph.prunable():
            reachable = widths_reachable(g, 8, 0.1)
            if reachable:  # the width profile_latency cut this group to at this fraction
                removed[g.id] = width_at(reachable, int(channels_per_unit(g).sum()), p["fraction"])[1]
        cuts.append(removed)
    joint = [dict(p) for p in lm.info["joint"]]
    info = dict(lm.info)
    if old == 2:
        overlap = overlap_of(CostModel(model, graph.prunable(), *meter.param_macs(model)), graph)
        joint = [{**p, "overlap": overlap(removed)} for p, removed in zip(joint, cuts)]
        lm, info["interaction_without_overlap"] = replace(lm, interaction=fit_interaction(joint)), doc["interaction"]
    if lm.macs_line is None:
        full = meter.macs(model)
        joint = [{**p, "macs_share_saved": 1.0 - meter.macs(cut_copy(model, graph, removed)) / full}
                 for p, removed in zip(joint, cuts)]
        line = fit_macs_line(joint, lm.baseline)
        if line is not None:
            info["line_over_curves"] = line_over_curves(joint, lm.interaction, line, lm.baseline)
        lm, info["macs_line_fitted_on_reuse"] = replace(lm, macs_line=line), True
    if lm.macs_line is not None and lm.element_rate is None and "work_rates" not in info:
        lm, info = with_stored_element_rate(replace(lm, info={**info, "joint": joint}), model, graph, meter, cuts)
        joint = info["joint"]
    ratio = meter.baseline / lm.baseline
    if abs(ratio - 1.0) > 0.05:
        groups = {g: GroupCurve(c.widths, tuple(s * ratio for s in c.seconds)) for g, c in lm.groups.items()}
        joint = [{**p, "additive_saving_s": p["additive_saving_s"] * ratio,
                  "measured_saving_s": p["measured_saving_s"] * ratio} for p in joint]
        info["rescaled_from_baseline_s"] = lm.baseline
        lm = replace(lm, baseline=meter.baseline, groups=groups)
    return replace(lm, info={**info, "joint": joint})


def with_stored_element_rate(lm, model, graph, meter, cuts: list[dict]):
    """``lm`` (its MACs line set) with the element rate fitted on its stored timings (``profile_latency`` with
    ``elements``): every single-group point and whole-model cut counted again for its MACs and elements."""
    from dataclasses import replace

    import numpy as np

    from cpd.prune.latency import cut_copy, widths_reachable, with_element_rate

    m0, e0 = meter.work(model)

    def saved(removed: dict) -> dict:
        macs, elements = meter.work(cut_copy(model, graph, removed))
        return {"macs_share_saved": 1.0 - macs / m0, "elements_share_saved": 1.0 - elements / e0}

    points = lm.info["points"]
    base = float(np.median(points["baseline_repeats"]))
    groups = {g.id: g for g in graph.prunable()}
    singles = []
    for g, curve in points["groups"].items():
        units = dict(widths_reachable(groups[int(g)], 8, 0.1))
        singles += [{**saved({int(g): units[w]}), "saving": 1.0 - s / base}
                    for w, s in zip(curve["widths"], curve["measured"]) if w in units]
    joint = [{**p, **saved(removed)} for p, removed in zip(lm.info["joint"], cuts)]
    lm = with_element_rate(replace(lm, info={**lm.info, "joint": joint}), singles)
    return lm, {**lm.info, "element_rate_fitted_on_reuse": True}


def stored_with_line(parser: argparse.ArgumentParser, archs: list[str]) -> dict[str, dict]:
    """The results of benchmarks/results/latency.json by architecture; ``parser.error`` (one line, naming the
    file) where one of ``archs`` has no latency model with a MACs line there."""
    path = ROOT / "benchmarks" / "results" / "latency.json"
    stored = {r["arch"]: r for r in json.loads(path.read_text())["results"]}
    missing = [a for a in archs if a not in stored or not stored[a]["latency_model"].get("macs_line")]
    if missing:
        parser.error(f"{path} holds no latency model with a MACs line for {', '.join(missing)}: run "
                     f"benchmarks/latency.py for it first")
    return stored


def at_speed(result: dict, metric: str, target: float) -> dict | None:
    """The least-sparse model of ``metric``'s ladder that reaches ``target`` (None: none does)."""
    rows = sorted((r for r in result["rows"].values() if r["metric"] == metric), key=lambda r: r["threshold"])
    return next((r for r in rows if r["speedup"] >= target * 0.95), None)


def macs_alone(res: dict, row: dict) -> float | None:
    """The speed-up the MACs line alone (no element rate: ``info["work_rates"]["line_alone"]``) predicts for
    ``row``'s model from its counted MACs; None where the row's model has no MACs line."""
    lm = res["latency_model"]
    line = (lm["info"].get("work_rates") or {}).get("line_alone") or lm.get("macs_line")
    if not line:
        return None
    return 1.0 / (1.0 - line * (1.0 - 1.0 / row["macs_ratio"]))


def steered(row: dict) -> float | None:
    """The speed-up the pruner estimated for the cut it kept before it first timed that cut: the latency
    model as the pruner steers with it (its last measured cut plus the corrected predicted difference,
    ``Pruner.estimate``); None for a row without checks.  A cut timed again in a row is one cut: the
    estimate is that of its first timing, not one anchored on the cut's own measurement."""
    checks = row.get("checks") or []
    if not checks:
        return None
    first = len(checks) - 1
    while first > 0 and checks[first - 1]["predicted"] == checks[-1]["predicted"]:
        first -= 1
    return 1.0 / (1.0 - checks[first]["corrected"])


def markdown(results: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = ["## Pruning to a measured speed (`python benchmarks/latency.py`)", "",
             f"Random weights, 512x512, batch 1, onnxruntime CPU, 1 thread; `magnitude` criterion, `round_to=8`, "
             f"`min_keep=0.1`, no training (speed only). Latency model: a few widths per group, each "
             f"measurement timed against the unpruned model in alternating blocks, and every group cut at once at "
             f"each width (the interaction, fitted over each cut's MACs overlap). Final speed-ups: ratios of "
             f"medians, every model of an architecture timed in one session in alternating blocks; the counts of "
             f"each architecture are in its line below. "
             f"On {machine()}, shared with other jobs (timings are noisy). Command: `{command}`.", "",
             "| model | target | latency targeting: speed-up (in-run) | pruner's estimate (error) "
             "| predicted (error) | MACs alone (error) | MACs ratio | params ratio "
             "| min / median width kept | params targeting at that speed | FLOPs targeting at that speed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for t in TARGETS:
            row = res["rows"].get(f"latency@{1 - 1 / t:.3f}")
            if row is None:
                lines.append(f"| {res['arch']} | {t}x | not reached | | | | | | | | |")
                continue
            if "predicted_speedup" not in row or res["latency_model"].get("version", 0) < 3:
                lines.append(f"| {res['arch']} | {t}x | (from an older latency model: rerun) | | | | | | | | |")
                continue
            alone = macs_alone(res, row)
            alone_text = "" if alone is None else f"{alone:.2f}x ({alone / row['measured_in_run'] - 1:+.0%})"
            lm = res["latency_model"]
            how = "two rates" if lm.get("element_rate") is not None else "line" if lm.get("macs_line") else "curves"
            est = steered(row)
            est_text = "" if est is None else f"{est:.2f}x ({est / row['measured_in_run'] - 1:+.0%})"
            other = []
            for metric in ("params", "flops"):
                r = at_speed(res, metric, t)
                other.append("none of the ladder" if r is None else
                             f"{r['threshold']:.2f} {metric} sparsity: {r['speedup']:.2f}x, widths min "
                             f"{r['kept']['min']:.2f} / median {r['kept']['median']:.2f}")
            pred = row["predicted_speedup"]
            lines.append(f"| {res['arch']} | {t}x | **{row['speedup']:.2f}x** ({row['measured_in_run']:.2f}x) | "
                         f"{est_text} | {pred:.2f}x ({pred / row['measured_in_run'] - 1:+.0%}, "
                         f"{how}) | {alone_text} | {row['macs_ratio']:.2f}x | {row['params_ratio']:.2f}x | "
                         f"{row['kept']['min']:.2f} / {row['kept']['median']:.2f} | {other[0]} | {other[1]} |")
    lines += ["", "Speed-up: final session; in-run: what the pruner measured when it stopped. Pruner's estimate: "
              "what the pruner estimated for the cut it kept before it first timed that cut (the latency model "
              "as the pruner steers with it: its last measured cut plus the corrected predicted difference), and "
              "its error against the in-run measurement. Predicted: the latency model's prediction for the same "
              "widths from its profile alone, before the pruner's correction by its own measurements (its MACs "
              "line with its element rate, `two rates`, or alone, `line`, where the row was pruned with one; else "
              "its curves, MACs overlap and interaction, `curves`), and its error against the in-run measurement. "
              "MACs alone: what the MACs line fitted on the whole-model cuts alone, without an element rate, "
              "predicts for the same model from its counted MACs (the same as predicted for a `line` row). "
              "Params/FLOPs targeting: the least sparse model of a ladder (0.2, 0.35, 0.5, 0.65, 0.8) within 5% "
              "of the target speed. Widths kept: per prunable group, kept / full channels, minimum and median over "
              "the groups.", ""]
    for res in results:
        k = res["latency_model"].get("interaction")
        over = " over the MACs overlap" if res["latency_model"].get("overlap") == "macs" else ""
        lines.append(f"- {res['arch']}: {res['groups']} prunable groups, baseline {res['baseline_ms']:.1f} ms, "
                     + (f"interaction {k:.2f}{over}, " if k is not None else "")
                     + (f"MACs line {res['latency_model']['macs_line']:.3f}"
                        + (" (fitted on the stored joint cuts)" if res["latency_model"]["info"].get(
                            "macs_line_fitted_on_reuse") and not res["latency_model"].get("element_rate") else "")
                        + ", "
                        if res["latency_model"].get("macs_line") else "")
                     + _rates(res["latency_model"])
                     + f"{res['profile_measurements']} timed exports (latency model, counting earlier runs with "
                     f"--reuse, and pruning), {res['seconds'] / 60:.1f} min in this run"
                     + (f" ({_how(res['args'], res['latency_model'])})." if "args" in res else "."))
    return "\n".join(lines)


def _rates(lm: dict) -> str:
    """The element rate of ``lm``'s line and what it was fitted on, or why there is none ("" before rates)."""
    rates = lm["info"].get("work_rates")
    if not rates:
        return ""
    if not rates.get("fitted"):
        return f"no element rate ({rates['why']}; {rates['points']} cuts), "
    stored = " on the stored timings" if lm["info"].get("element_rate_fitted_on_reuse") else ""
    return (f"element rate {lm['element_rate']:.3f} beside it (both fitted{stored} on {rates['points']} cuts; "
            f"the line alone, on the joint cuts: {rates['line_alone']:.3f}), ")


def _how(args: dict, lm: dict) -> str:
    fractions = sorted({p["fraction"] for p in lm["info"].get("joint", [])} | set(args["fractions"]))
    widths = ", ".join("floor" if f == 0 else f"{f:g}" for f in fractions)
    if not fractions or fractions[0] > 0.1:  # min_keep is 0.1: a fraction of 0.1 is the floor
        widths += " (no floor point)"
    return (f"widths per group {widths}; {args['runs']} runs in {args['rounds']} blocks per "
            f"measurement, final session {args['final_runs']} runs in {args['final_rounds']} blocks")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(DEFAULT), choices=sorted(ARCHS))
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--final-runs", type=int, default=12)
    parser.add_argument("--final-rounds", type=int, default=4)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--reuse", action="store_true", help="take the latency models of benchmarks/results/"
                        "latency.json instead of measuring them again")
    parser.add_argument("--report", metavar="COMMAND", help="only rewrite the docs section from benchmarks/results/"
                        "latency.json, naming COMMAND as the one that measured it")
    args = parser.parse_args(argv)
    path = ROOT / "benchmarks" / "results" / "latency.json"
    torch.set_num_threads(1)
    if args.report:
        saved = json.loads(path.read_text())
        vars(args).update({k: v for k, v in saved["args"].items() if k not in ("report", "reuse")})
        update_section("latency", markdown(saved["results"], args, args.report))
        return 0
    kept = json.loads(path.read_text())["results"] if path.is_file() else []
    args.previous = kept if args.reuse else []
    torch.set_num_threads(1)
    results = [r for r in kept if r["arch"] not in args.arch]
    for name in args.arch:
        results.append(bench(name, ARCHS[name], args))
        results.sort(key=lambda r: list(ARCHS).index(r["arch"]) if r["arch"] in ARCHS else len(ARCHS))
        write_results("latency", {"results": results,
                                  "args": {k: v for k, v in vars(args).items() if k != "previous"}})
    slim = [{k: v for k, v in r.items() if k != "latency_model"} for r in results]
    print(json.dumps({r["arch"]: {k: (v["speedup"], v.get("predicted_speedup")) for k, v in r["rows"].items()}
                      for r in slim}, indent=1))
    command = "python benchmarks/latency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    update_section("latency", markdown(results, args, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
