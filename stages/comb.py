"""Stage ``comb``: trace the baseline's architecture and write its dependency JSON.

Usage: python -m stages.comb CONFIG OUT_JSON METRICS_JSON

Reads the ``comb`` section of params.yaml.  CONFIG is the train stage's ``config.py``; the model is
built with random weights (the structure is all that matters).  OUT_JSON is what ``cpd comb`` writes
and the PruningHook reads (``prune_cfg``); METRICS_JSON gets the group counts.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from cpd.pipeline.params import CombParams, read_section
from cpd.pipeline.stage import log, run_stage, write_json

STAGE = "comb"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="python -m stages.comb", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the trained config (the train stage's config.py)")
    parser.add_argument("out", help="dependency JSON to write")
    parser.add_argument("metrics", help="metrics JSON to write")
    return parser.parse_args(argv)


def work(args: argparse.Namespace) -> None:
    """Validate the params, then comb."""
    params: CombParams = read_section(STAGE)
    from cpd import save_deps
    from cpd.mm import load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.recipe import comb_segmentor

    quiet_console()  # library warnings nobody here can act on stay off the console

    start = time.perf_counter()
    graph = comb_segmentor(load_config(args.config), params)
    save_deps(graph, args.out)
    prunable = [g for g in graph.groups if g.prunable]
    metrics = {"groups": len(graph.groups), "prunable_groups": len(prunable),
               "prunable_units": sum(g.num_units for g in prunable), "seconds": round(time.perf_counter() - start, 1)}
    log(STAGE, f"{metrics['groups']} groups, {metrics['prunable_groups']} prunable -> {args.out}")
    write_json(args.metrics, metrics)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage; return the exit code."""
    args = parse_args(argv)
    return run_stage(STAGE, lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
