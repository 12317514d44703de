"""Stage ``summary``: one table of the run, the curves against sparsity, and the plots as PNG.

Usage: python -m stages.summary EVALUATE_JSON EXPORT_JSON LIVE_DIRS PLOTS_DIR METRICS_JSON

Reads no params.  LIVE_DIRS is a comma-separated list of ``name=folder`` DVCLive folders (the training
runs).  Writes METRICS_JSON (the main metric: mIoU, or top1 for a classifier; params, FLOPs and latency
of the baseline, pruned and distilled models, the metric's drop, the speed-up beside the FLOPs ratio), and
in PLOTS_DIR ``sparsity.csv`` (one row per model), ``sparsity.png`` (the metric, params and latency
against sparsity) and ``training.png`` (losses and the validation metric of the training runs).  The PNG
files are there because DVC's HTML plots load their renderer from a CDN.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cpd.pipeline.report import plot_sparsity, plot_training, sparsity_rows, summarize, write_csv
from cpd.files import write_atomic
from cpd.pipeline.stage import log, read_json, run_stage, write_json

STAGE = "summary"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="python -m stages.summary", description=__doc__.splitlines()[0])
    parser.add_argument("evaluate", help="the evaluate stage's metrics JSON")
    parser.add_argument("export", help="the export stage's metrics JSON")
    parser.add_argument("live_dirs", help="name=folder,... of the DVCLive folders")
    parser.add_argument("plots_dir", help="folder for sparsity.csv and the PNG files")
    parser.add_argument("metrics", help="metrics JSON to write")
    return parser.parse_args(argv)


def work(args: argparse.Namespace) -> None:
    """Merge the metrics and draw."""
    evaluation, export = read_json(args.evaluate), read_json(args.export)
    summary = summarize(evaluation, export)
    rows = sparsity_rows(evaluation, export)
    plots = Path(args.plots_dir)
    live = dict(item.split("=", 1) for item in args.live_dirs.split(","))
    for name, draw in (("sparsity.csv", lambda tmp: write_csv(rows, tmp)),
                       ("sparsity.png", lambda tmp: plot_sparsity(rows, tmp)),
                       ("training.png", lambda tmp: plot_training(live, tmp))):
        write_atomic(plots / name, draw)
    write_json(args.metrics, summary)
    b, d, metric = summary["baseline"], summary["distilled"], summary.get("metric", "mIoU")
    log(STAGE, f"baseline  {metric} {b[metric]:.4f}, {b['params']} params, {b['flops'] / 1e6:.1f} MFLOPs, "
               f"{b.get('latency_ms', float('nan')):.3f} ms")
    log(STAGE, f"distilled {metric} {d[metric]:.4f}, {d['params']} params, {d['flops'] / 1e6:.1f} MFLOPs, "
               f"{d.get('latency_ms', float('nan')):.3f} ms (sparsity {d['sparsity']:.3f})")
    log(STAGE, f"{metric} drop {summary[f'{metric}_drop'] * 100:.2f} points; speed-up {summary['speedup']}x, "
               f"FLOPs ratio {summary['flops_ratio']}x")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage; return the exit code."""
    args = parse_args(argv)
    return run_stage(STAGE, lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
