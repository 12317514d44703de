"""The embedded default pruned to a measured speed, against parameter and FLOPs targeting at the same speed.

``prune.metric=latency`` with ``prune.thresholds=[0.2,0.4]`` asks for 1.25x, then 1.67x the unpruned model's
onnxruntime speed (the latency stage measures the latency model first; the pruner re-measures at each
threshold). Parameter and FLOPs targeting reach a speed only through a sparsity, so the sparsity that gives
1.67x is found first, once, on seed 0: each is pruned through a ladder of thresholds, the export stage times the
pruned model of every threshold (``export.curve``), and the threshold where the measured speed-up crosses the
target is interpolated. Then, per seed (``prune.seed`` and ``distill.seed``; the baseline is the committed
pipeline's, trained once, so every run starts from the same model), each of the three metrics runs ``dvc
repro`` with thresholds ``[0.2, t]``: prune while distilling, distil (same budget for all), evaluate, export.

Every run is a fresh git + DVC repository holding this checkout's pipeline and ``dvc.lock``, with its cache
seeded from the repository's, so data, train and comb come from the cache and only the stages after them run.

    python benchmarks/speed_target.py [--seeds 0 1 2] [--resume] [--work DIR] [--cache .dvc/cache] [--report]

Writes benchmarks/results/speed_target.json after every run (``--resume`` skips the runs it holds) and the
``speed-target`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cls_pipeline import make_repo, mean_std, sh  # noqa: E402

TARGET = 0.4  # latency sparsity: 1 / (1 - 0.4) = 1.67x
FIRST = 0.2
LADDER = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55)
METRICS = ("latency", "params", "flops")
RESULTS = ROOT / "benchmarks" / "results" / "speed_target.json"


def run(params: dict, where: Path, cache: Path) -> dict:
    """``dvc repro`` of ``params`` in a fresh repository at ``where`` whose cache is ``cache``; its metrics."""
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    repo = make_repo(where, params)
    shutil.copy(ROOT / "dvc.lock", repo / "dvc.lock")
    for name in ("metrics", "plots"):  # the stages' uncached outputs: without them dvc would rerun training
        shutil.copytree(ROOT / name, repo / name, dirs_exist_ok=True)
    sh(repo, "dvc", "cache", "dir", str(cache))
    sh(repo, "dvc", "checkout", "-q")
    t0 = time.perf_counter()
    sh(repo, "dvc", "repro")
    seconds = time.perf_counter() - t0
    read = {name: json.loads((repo / "metrics" / f"{name}.json").read_text())
            for name in ("summary", "prune", "export", "latency")}
    return {"seconds": seconds, **read}


def with_params(base: dict, metric: str, thresholds: list[float], seed: int) -> dict:
    """``base`` (params.yaml) pruning to ``thresholds`` of ``metric``, prune and distill seeded with ``seed``,
    every threshold's model exported and timed."""
    params = json.loads(json.dumps(base))
    params["prune"].update(metric=metric, thresholds=thresholds, seed=seed)
    params["distill"]["seed"] = seed
    params["export"]["curve"] = True
    return params


def speed_at(export: dict, thresholds: list[float]) -> dict[float, float]:
    """Measured speed-up of each threshold's model in one export session (the last: the distilled model)."""
    lat = export["latency"]
    base = lat["baseline"]["median_ms"]
    out = {t: base / lat[f"thr_{t}"]["median_ms"] for t in thresholds[:-1]}
    out[thresholds[-1]] = base / lat["distilled"]["median_ms"]
    return out


def crossing(speeds: dict[float, float], target: float) -> float:
    """The threshold where the measured speed-up reaches ``target``, linearly between the ladder's points (rounded
    to 0.005); the speeds are made non-decreasing first (a sparser model of one run is never slower)."""
    ts = np.array(sorted(speeds))
    vs = np.maximum.accumulate(np.array([speeds[t] for t in ts]))
    if target <= vs[0]:
        return float(ts[0])
    if target >= vs[-1]:
        raise SystemExit(f"the ladder {list(ts)} reaches only {vs[-1]:.2f}x, not {target:.2f}x: extend LADDER")
    i = int(np.searchsorted(vs, target))
    t = ts[i - 1] + (target - vs[i - 1]) * (ts[i] - ts[i - 1]) / max(vs[i] - vs[i - 1], 1e-9)
    return round(round(float(t) / 0.005) * 0.005, 3)


def retime(data: dict, work: Path, runs: int = 3000, rounds: int = 30) -> None:
    """Time the baseline and every run's distilled ONNX file in one session, in alternating blocks: the export
    stages ran at different times under different machine loads, so their speed-ups are not side by side."""
    from cpd.export import compare_latency

    paths = {"baseline": work / f"latency-{min(r['seed'] for r in data['runs'].values())}" / "outputs" / "export"
             / "baseline.onnx"}
    paths |= {key: work / key / "outputs" / "export" / "distilled.onnx" for key in sorted(data["runs"])}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        print(f"not retimed: {len(missing)} ONNX files are gone (first: {missing[0]}); run with --work DIR to keep "
              "them", flush=True)
        return
    timing = compare_latency(paths, None, 50, runs, rounds, "cpu", 1)
    base = timing["baseline"]["median_ms"]
    data["retimed"] = {"runs": runs, "rounds": rounds, "baseline_ms": base,
                       "speedup": {k: base / v["median_ms"] for k, v in timing.items() if k != "baseline"}}


def section(data: dict) -> str:
    """The markdown of the ``speed-target`` section of docs/benchmarks.md."""
    from benchmarks.report import machine

    runs, thr = data["runs"], data["thresholds"]
    seeds = sorted({r["seed"] for r in runs.values()})
    target = 1.0 / (1.0 - TARGET)
    again = data.get("retimed", {}).get("speedup", {})
    lines = [f"## The embedded default to a measured speed (`python benchmarks/speed_target.py`)", "",
             f"Goal: {target:.2f}x the unpruned model's onnxruntime CPU speed (batch 1, one thread, at the config's "
             f"64x64). `prune.metric=latency`, `prune.thresholds=[{FIRST},{TARGET}]` against parameter and FLOPs "
             f"targeting at the sparsity that gives the same measured speed-up (found once on seed 0 from the "
             f"ladder {list(LADDER)}: parameters {thr['params']}, FLOPs {thr['flops']}). Every run: prune while "
             f"distilling, then the default 500 distillation iterations; the same baseline (mIoU "
             f"{data['baseline_mIoU']:.4f}); seeds of prune and distill {seeds}. Speed-up: the export stage's "
             f"(baseline and distilled model timed in alternating blocks in one session, each run at its own time), "
             f"and in one session for all: the baseline and every run's distilled ONNX file, "
             f"{data.get('retimed', {}).get('runs', '-')} runs each in "
             f"{data.get('retimed', {}).get('rounds', '-')} alternating blocks. {machine()}.", "",
             "| seed | metric | threshold | params sparsity | FLOPs ratio | speed-up: export stage | one session "
             "| mIoU pruned | mIoU distilled | drop (points) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for seed in seeds:
        for m in METRICS:
            r = runs.get(f"{m}-{seed}")
            if r is None:
                continue
            s = r["summary"]
            one = f"{again[f'{m}-{seed}']:.2f}x" if f"{m}-{seed}" in again else "-"
            lines.append(f"| {seed} | {m} | {thr[m]} | {1 - 1 / s['params_ratio']:.3f} | {s['flops_ratio']:.2f}x | "
                         f"{s['speedup']:.2f}x | {one} | {s['pruned']['mIoU']:.4f} | {s['distilled']['mIoU']:.4f} | "
                         f"{(s['baseline']['mIoU'] - s['distilled']['mIoU']) * 100:.1f} |")
    lines += ["", "| metric | speed-up: export stage | one session | mIoU distilled | latency minus it, per seed "
              "(points) |", "|---|---|---|---|---|"]
    for m in METRICS:
        rs = [runs[f"{m}-{s}"] for s in seeds if f"{m}-{s}" in runs]
        if not rs:
            continue
        sp = mean_std([r["summary"]["speedup"] for r in rs])
        mi = mean_std([r["summary"]["distilled"]["mIoU"] for r in rs])
        one = [again[f"{m}-{s}"] for s in seeds if f"{m}-{s}" in again]
        one_cell = "{:.2f}x ± {:.2f}".format(*mean_std(one)) if one else "-"
        diff = [(runs[f"latency-{s}"]["summary"]["distilled"]["mIoU"] - runs[f"{m}-{s}"]["summary"]["distilled"]
                 ["mIoU"]) * 100 for s in seeds if f"latency-{s}" in runs and f"{m}-{s}" in runs]
        lines.append(f"| {m} | {sp[0]:.2f}x ± {sp[1]:.2f} | {one_cell} | {mi[0]:.4f} ± {mi[1]:.4f} | "
                     f"{', '.join(f'{d:+.1f}' for d in diff) if m != 'latency' else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cache", type=Path, default=ROOT / ".dvc" / "cache",
                    help="a DVC cache holding the committed pipeline's outputs (copied, not changed)")
    ap.add_argument("--work", type=Path, help="run in DIR and keep the repositories (default: a temp dir)")
    ap.add_argument("--resume", action="store_true", help="keep the runs benchmarks/results/speed_target.json holds")
    ap.add_argument("--no-doc", action="store_true", help="write the results JSON only")
    ap.add_argument("--report", action="store_true", help="only rewrite the docs section from the results JSON")
    ap.add_argument("--retime", action="store_true", help="only time the kept runs' ONNX files again, in one "
                    "session, and rewrite the docs section (needs --work DIR of the runs)")
    args = ap.parse_args(argv)
    from benchmarks.report import machine, update_section, write_results

    if args.report:
        update_section("speed-target", section(json.loads(RESULTS.read_text())))
        return 0
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    data = json.loads(RESULTS.read_text()) if args.resume and RESULTS.is_file() else {}
    data.setdefault("runs", {})
    data.setdefault("thresholds", {"latency": TARGET})
    data.setdefault("calibration", {})
    data["machine"] = machine()
    with tempfile.TemporaryDirectory(prefix="speed-target-") as tmp:
        work = args.work or Path(tmp)
        cache = work / "cache"
        if not cache.exists():
            shutil.copytree(args.cache, cache)

        def save() -> None:
            write_results("speed_target", data)

        for m in ("params", "flops"):
            if m in data["thresholds"] or args.retime:
                continue
            r = run(with_params(base, m, list(LADDER), 0), work / f"ladder-{m}", cache)
            speeds = speed_at(r["export"], list(LADDER))
            data["calibration"][m] = {"speedups": {str(t): v for t, v in speeds.items()},
                                      "seconds": r["seconds"]}
            data["thresholds"][m] = crossing(speeds, 1.0 / (1.0 - TARGET))
            print(f"{m}: ladder speed-ups {speeds} -> threshold {data['thresholds'][m]}", flush=True)
            save()
        for seed in [] if args.retime else args.seeds:
            for m in METRICS:
                key = f"{m}-{seed}"
                if key in data["runs"]:
                    continue
                r = run(with_params(base, m, [FIRST, data["thresholds"][m]], seed), work / key, cache)
                r["seed"], r["metric"] = seed, m
                data["runs"][key] = r
                data["baseline_mIoU"] = r["summary"]["baseline"]["mIoU"]
                s = r["summary"]
                print(f"{key}: {s['speedup']:.2f}x, mIoU {s['pruned']['mIoU']:.4f} -> {s['distilled']['mIoU']:.4f}, "
                      f"{r['seconds'] / 60:.1f} min", flush=True)
                save()
        retime(data, work)
        save()
    if not args.no_doc:
        update_section("speed-target", section(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
