"""Stage ``data``: write the embedded scenes (or check a dataset folder) and describe them.

Usage: python -m stages.data OUT_DIR METRICS_JSON

Reads the ``data`` section of params.yaml.  Writes ``OUT_DIR/dataset.json`` (the data root every later
stage trains and tests on), ``OUT_DIR/digit_mosaic/`` (mmseg layout: img_dir/ and ann_dir/, train and
val) for the embedded default, ``OUT_DIR/digit_pairs/`` (mmpretrain's folder layout: train/<class>/ and
val/<class>/) for the embedded classification set, and the scene (and pixel) counts to METRICS_JSON.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cpd.pipeline.dataset import prepare_data
from cpd.pipeline.params import DataParams, read_section
from cpd.pipeline.stage import log, run_stage, write_json

STAGE = "data"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="python -m stages.data", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output folder (dataset.json and the scenes)")
    parser.add_argument("metrics", help="metrics JSON to write")
    return parser.parse_args(argv)


def work(args: argparse.Namespace) -> None:
    """Validate the params, then make the data."""
    params: DataParams = read_section(STAGE)
    if params.source != "folder":
        log(STAGE, f"writing {params.n_train} training and {params.n_val} validation scenes (seed {params.seed})")
    info = prepare_data(params, args.out_dir)
    log(STAGE, f"data root: {info['data_root']}")
    metrics = {"source": info["source"]}
    if info.get("counts"):
        metrics.update({"n_train": info["counts"]["train"], "n_val": info["counts"]["val"]})
    if info.get("pixel_counts"):
        pixels = info["pixel_counts"]["train"]
        metrics["foreground"] = round(1.0 - pixels[0] / sum(pixels), 4)
    write_json(args.metrics, metrics)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage; return the exit code."""
    args = parse_args(argv)
    return run_stage(STAGE, lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
