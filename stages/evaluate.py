"""Stage ``evaluate``: the task's metrics, parameters and FLOPs of the baseline, the pruned and the distilled model.

Usage: python -m stages.evaluate TRAIN_DIR PRUNE_DIR DISTILL_DIR OUT_DIR METRICS_JSON

Reads the ``evaluate`` section of params.yaml.  Every model runs the trained config's test loop (the
validation scenes of the embedded default); FLOPs are multiply-accumulates of one image at the crop
size (the convention of mmcv's ``get_flops`` and fvcore) through the forward inference runs, the one export
writes (``flops_graph: inference``: no auxiliary heads).  The pruned model at each threshold of
PRUNE_DIR is measured too, for the curves against sparsity.  METRICS_JSON: ``metric`` (the task's main
metric, when it is not mIoU), ``baseline``, ``pruned`` (the target), ``distilled`` and ``thresholds``,
each with the task's metrics as fractions (a segmentor: mIoU, aAcc, mAcc; a classifier: top1, top5),
params, flops and the parameter sparsity; OUT_DIR keeps mmengine's test logs.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cpd.pipeline.params import EvaluateParams, read_section
from cpd.pipeline.stage import log, read_json, run_stage, write_json

STAGE = "evaluate"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__.splitlines()[0])
    for name in ("train_dir", "prune_dir", "distill_dir"):
        parser.add_argument(name, help=f"the {name.split('_')[0]} stage's output folder")
    parser.add_argument("out_dir", help="output folder (test logs)")
    parser.add_argument("metrics", help="metrics JSON to write")
    return parser.parse_args(argv)


def work(args: argparse.Namespace) -> None:
    """Validate the params, then test every model."""
    params: EvaluateParams = read_section(STAGE)
    from cpd.mm import load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.evaluation import (FLOPS_GRAPH, load_baseline, load_student, main_metric, model_cost, pruned_type,
                                   test_model)

    quiet_console()  # mmengine's environment and config dumps go to the log files only

    train, prune, out = Path(args.train_dir), Path(args.prune_dir), Path(args.out_dir)
    base = load_config(train / "config.py")
    pruning = read_json(prune / "pruning.json")
    metric, kind = main_metric(base), pruned_type(base)

    def measure(name: str, model, model_cfg, load_from=None) -> dict:
        log(STAGE, f"testing {name}")
        scores = test_model(base, model_cfg, out / name, load_from, params.batch_size, params.workers)
        return {**scores, **model_cost(model)}

    baseline = measure("baseline", load_baseline(base, train / "baseline.pth"), base.model, train / "baseline.pth")
    models = {f"thr_{t}": prune / info["file"] for t, info in pruning["thresholds"].items()}
    models["distilled"] = Path(args.distill_dir) / "student.pth"
    results = {name: measure(name, load_student(path), dict(type=kind, checkpoint=str(path)))
               for name, path in models.items()}
    for m in [baseline, *results.values()]:
        m["sparsity"] = round(1.0 - m["params"] / baseline["params"], 6)
    target = f"{pruning['target']:g}"
    named = {} if metric == "mIoU" else {"metric": metric}  # a segmentation run's file stays as it was
    metrics = {"target": pruning["target"], **named, "flops_graph": FLOPS_GRAPH, "baseline": baseline,
               "pruned": results[f"thr_{target}"],
               "distilled": results["distilled"],
               "thresholds": {t: results[f"thr_{t}"] for t in pruning["thresholds"]}}
    write_json(args.metrics, metrics)
    for name in ("baseline", "pruned", "distilled"):
        m = metrics[name]
        log(STAGE, f"{name:9s} {metric} {m[metric]:.4f}  params {m['params']}  FLOPs {m['flops'] / 1e6:.1f} M")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage; return the exit code."""
    args = parse_args(argv)
    return run_stage(STAGE, lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
