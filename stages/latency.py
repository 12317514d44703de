"""Stage ``latency``: measure the latency model that ``prune.metric: latency`` prunes with.

Usage: python -m stages.latency CONFIG DEPS_JSON OUT_DIR METRICS_JSON

Reads the ``latency`` section of params.yaml, and ``prune.metric``, ``prune.round_to`` and
``prune.min_keep`` (the widths measured are widths the pruning run can reach).  With ``prune.metric:
latency`` the model of CONFIG (random weights: only the structure is timed) is cut group by group to a few
widths and each cut copy's inference forward (no auxiliary heads) is timed on the runtime at the
deployment input (``latency.size`` or the config's crop size, ``latency.batch``) against the unpruned
model; OUT_DIR/latency.json is the latency model (``cpd-latency``, checked against DEPS_JSON's
fingerprint).  With another metric nothing is measured: OUT_DIR holds only ``skipped.json``.  The
``round_to`` measurement is reported beside ``prune.round_to``, which is never changed.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cpd.pipeline.params import LatencyParams, PruneParams, read_section
from cpd.pipeline.stage import log, run_stage, write_json

STAGE = "latency"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="python -m stages.latency", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the trained config (the train stage's config.py)")
    parser.add_argument("deps", help="the comb stage's dependency JSON")
    parser.add_argument("out_dir", help="output folder (latency.json, or skipped.json)")
    parser.add_argument("metrics", help="metrics JSON to write")
    return parser.parse_args(argv)


def work(args: argparse.Namespace) -> None:
    """Validate the params, then measure (or say why not)."""
    params: LatencyParams = read_section(STAGE)
    prune: PruneParams = read_section("prune")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in ("latency.json", "skipped.json"):
        (out / old).unlink(missing_ok=True)
    if prune.metric != "latency":
        why = {"skipped": f"prune.metric is {prune.metric!r}; the latency model is measured for 'latency' only"}
        write_json(out / "skipped.json", why)
        write_json(args.metrics, why)
        log(STAGE, f"skipped: prune.metric is {prune.metric!r}")
        return
    from cpd.graph.deps_io import load_deps
    from cpd.mm import build_model, example_inputs, load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.latency_meter import profile_model
    from cpd.mm.tasks import task_of

    quiet_console()  # library warnings nobody here can act on stay off the console

    cfg = load_config(args.config)
    model = build_model(cfg).eval()  # built as trained (and combed): the deployment size is only the input
    graph = load_deps(args.deps, model)
    shape = list(example_inputs(model, size=params.size, batch=params.batch).shape)
    start = time.perf_counter()
    lm = profile_model(model, task_of(cfg).infer_forward, graph, shape, params.provider, params.threads,
                       params.warmup, params.runs, params.rounds, prune.round_to, prune.min_keep, params.align,
                       lambda line: log(STAGE, line))
    lm.save(out / "latency.json")
    alignment = lm.info.get("round_to", {})
    suggested = alignment.get("suggested")
    if suggested is not None and suggested != prune.round_to:
        log(STAGE, f"round_to: prune.round_to is {prune.round_to}; on {lm.runtime} widths that are multiples of "
                   f"{suggested} measured fastest (excess per alignment {alignment['excess']}); prune.round_to "
                   "is left as given")
    metrics = {"runtime": lm.runtime, "input_shape": list(lm.input_shape), "baseline_ms": round(lm.baseline * 1e3, 4),
               "groups": len(lm.groups), "measurements": lm.info.get("measurements"),
               "round_to": {"given": prune.round_to, "suggested": suggested},
               "macs_line": lm.macs_line, "element_rate": lm.element_rate,
               "seconds": round(time.perf_counter() - start, 1)}
    write_json(args.metrics, metrics)
    log(STAGE, f"{len(lm.groups)} groups measured on {lm.runtime} at {shape}, baseline "
               f"{metrics['baseline_ms']:.3f} ms -> {out / 'latency.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage; return the exit code."""
    args = parse_args(argv)
    return run_stage(STAGE, lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
