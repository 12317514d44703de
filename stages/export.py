"""Stage ``export``: ONNX files of the baseline and the distilled model, checked, and their latency.

Usage: python -m stages.export TRAIN_DIR PRUNE_DIR DISTILL_DIR OUT_DIR METRICS_JSON

Reads the ``export`` section of params.yaml.  Each model is exported with torch's dynamo exporter at a
batch of 2 with a dynamic batch axis, passes ``onnx.checker``, and must agree with torch within
``atol + rtol * max|torch|`` at batches 2 and 1 (the stage fails otherwise).  Latency: onnxruntime at
batch 1 on the provider chosen (``auto``: CUDA when it works, else the CPU), ``warmup`` untimed runs,
then ``runs`` timed runs per model taken in ``rounds`` alternating blocks; median and p90.  With
``curve: true`` the pruned models of the other thresholds are exported and timed too.  Writes
``OUT_DIR/<model>.onnx``; METRICS_JSON holds the checks, the latencies, the speed-up (baseline median
over distilled median) and, beside it, the FLOPs ratio.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cpd.pipeline.params import ExportParams, read_section
from cpd.pipeline.stage import log, read_json, run_stage, write_json

STAGE = "export"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="python -m stages.export", description=__doc__.splitlines()[0])
    for name in ("train_dir", "prune_dir", "distill_dir"):
        parser.add_argument(name, help=f"the {name.split('_')[0]} stage's output folder")
    parser.add_argument("out_dir", help="output folder for the .onnx files")
    parser.add_argument("metrics", help="metrics JSON to write")
    return parser.parse_args(argv)


def work(args: argparse.Namespace) -> None:
    """Validate the params, then export, check and time."""
    params: ExportParams = read_section(STAGE)
    from cpd.export import compare_latency, export_checked, pick_provider
    from cpd.mm import example_inputs, load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.evaluation import FLOPS_GRAPH, load_baseline, load_student, model_cost
    from cpd.mm.pruning_hook import task_of_model

    quiet_console()  # library warnings nobody here can act on stay off the console

    provider = pick_provider(params.provider)
    train, prune, out = Path(args.train_dir), Path(args.prune_dir), Path(args.out_dir)
    pruning = read_json(prune / "pruning.json")
    models = {"baseline": load_baseline(load_config(train / "config.py"), train / "baseline.pth"),
              "distilled": load_student(Path(args.distill_dir) / "student.pth")}
    if params.curve:
        for t, info in pruning["thresholds"].items():
            if float(t) != pruning["target"]:
                models[f"thr_{t}"] = load_student(prune / info["file"])
    checks, paths = {}, {}
    for name, model in models.items():
        log(STAGE, f"exporting {name}")
        x = example_inputs(model, batch=1)
        # what inference runs (a segmentor's decode head, a classifier's class scores), not the auxiliary heads
        forward = task_of_model(model).infer_forward
        checks[name] = export_checked(model, x, out / f"{name}.onnx", forward, params.atol, params.rtol,
                                      params.opset)
        paths[name] = out / f"{name}.onnx"
        log(STAGE, f"{name}: onnx.checker ok, max |onnx - torch| {checks[name]['max_abs_diff']:.2e}")
    shape = list(example_inputs(models["baseline"], batch=1).shape)
    log(STAGE, f"timing {list(paths)} on {provider}: {params.warmup} warm-up, {params.runs} runs in "
               f"{params.rounds} rounds, batch 1")
    latency = compare_latency(paths, shape, params.warmup, params.runs, params.rounds, params.provider,
                              params.threads)
    flops = {name: model_cost(models[name])["flops"] for name in ("baseline", "distilled")}
    speedup = latency["baseline"]["median_ms"] / latency["distilled"]["median_ms"]
    metrics = {"provider": latency["baseline"]["provider"], "input_shape": shape, "speedup": round(speedup, 4),
               "flops_ratio": round(flops["baseline"] / flops["distilled"], 4), "flops_graph": FLOPS_GRAPH,
               "latency": latency, "onnx": checks}
    write_json(args.metrics, metrics)
    for name, lat in latency.items():
        log(STAGE, f"{name:9s} median {lat['median_ms']:.3f} ms  p90 {lat['p90_ms']:.3f} ms")
    log(STAGE, f"speed-up {speedup:.2f}x (FLOPs ratio {metrics['flops_ratio']:.2f}x) on {metrics['provider']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage; return the exit code."""
    args = parse_args(argv)
    return run_stage(STAGE, lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
