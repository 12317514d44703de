"""Stage ``prune``: prune the baseline to the sparsity thresholds with the PruningHook, KD on if configured.

Usage: python -m stages.prune TRAIN_DIR DEPS_JSON LATENCY_DIR OUT_DIR METRICS_JSON

Reads the ``prune`` section of params.yaml.  Starts from TRAIN_DIR's ``baseline.pth`` and ``config.py``
and trains with :class:`cpd.mm.pruning_hook.PruningHook` (``prune_cfg=DEPS_JSON``): every ``interval``
iterations the least important units (by ``criterion``) are masked, ``step_fraction`` of the metric
at a time, until the last threshold (the target); then the run stops.  With ``metric: latency`` the hook
prunes with LATENCY_DIR's ``latency.json`` (the latency stage's) and re-measures the cut model at each
threshold; ``pruning.json`` then holds the predicted and measured sparsity of every measurement.  With ``kd: true`` the model is a
Distiller whose teacher is the baseline, so the importance sees the KD gradient too.  Writes to OUT_DIR
``thr_<t>.pth`` per threshold (cut model + plan), ``pruned.pth`` (the target's), ``pruning.json`` (the
thresholds and the sparsity reached) and ``dvclive/``, ``work/``; the same numbers to METRICS_JSON.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cpd.pipeline.params import PruneParams, read_section
from cpd.pipeline.stage import log, run_stage, write_json

STAGE = "prune"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="python -m stages.prune", description=__doc__.splitlines()[0])
    parser.add_argument("train_dir", help="the train stage's output folder")
    parser.add_argument("deps", help="the comb stage's dependency JSON")
    parser.add_argument("latency_dir", help="the latency stage's output folder (used with metric: latency)")
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("metrics", help="metrics JSON to write")
    return parser.parse_args(argv)


def work(args: argparse.Namespace) -> None:
    """Validate the params, then prune."""
    params: PruneParams = read_section(STAGE)
    from cpd.mm import load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.launch import run_config
    from cpd.mm.pruning_hook import threshold_name
    from cpd.mm.recipe import prune_config, with_imports
    from cpd.prune import read_checkpoint

    quiet_console()  # mmengine's environment and config dumps go to the log files only

    train, out = Path(args.train_dir), Path(args.out_dir)
    latency = Path(args.latency_dir) / "latency.json" if params.metric == "latency" else None
    if latency is not None and not latency.is_file():
        raise FileNotFoundError(f"prune.metric is 'latency' but {latency} does not exist: run the latency stage "
                                "(dvc repro latency)")
    cfg = prune_config(load_config(train / "config.py"), params, train / "baseline.pth", args.deps, out,
                       out / "work", out / "dvclive", latency)
    if latency is not None:
        with_imports(cfg, ["cpd.mm.latency_meter"])  # the hook re-measures through it (it imports onnxruntime)
    log(STAGE, f"pruning to {list(params.thresholds)} {params.metric} sparsity with {params.criterion!r}, "
               f"{params.step_fraction} every {params.interval} iterations, KD {'on' if params.kd else 'off'}")
    start = time.perf_counter()
    run_config(cfg, params.gpus)
    reached = {}
    for t in params.thresholds:
        path = out / threshold_name(t)
        if path.is_file():
            summary = read_checkpoint(path)[0]["summary"]
            reached[f"{t:g}"] = {"file": path.name, "sparsity": round(summary["sparsity"], 6),
                                 "iteration": summary.get("iteration")}
            if "latency" in summary:  # every measurement up to this threshold: predicted against measured
                reached[f"{t:g}"]["latency"] = {k: summary["latency"][k] for k in ("predicted", "checks")}
    target = f"{params.target:g}"
    if target not in reached:
        raise RuntimeError(f"the target sparsity {params.target} was not reached (saved: {sorted(reached)}); no "
                           "group could lose another unit: lower prune.thresholds or prune.min_keep")
    shutil.copyfile(out / reached[target]["file"], out / "pruned.pth")
    result = {"target": params.target, "metric": params.metric, "criterion": params.criterion, "kd": params.kd,
              "thresholds": reached, "seconds": round(time.perf_counter() - start, 1)}
    write_json(out / "pruning.json", result)
    write_json(args.metrics, result)
    log(STAGE, f"reached {reached[target]['sparsity']:.4f} {params.metric} sparsity -> {out / 'pruned.pth'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage; return the exit code."""
    args = parse_args(argv)
    return run_stage(STAGE, lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
