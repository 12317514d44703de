"""Stage ``distill``: fine-tune the pruned student with knowledge distillation from the baseline.

Usage: python -m stages.distill TRAIN_DIR PRUNE_DIR OUT_DIR METRICS_JSON

Reads the ``distill`` section of params.yaml.  The model is a :class:`cpd.mm.distiller.Distiller`: the
student is PRUNE_DIR's ``pruned.pth`` (rebuilt from its plan), the frozen teacher TRAIN_DIR's baseline;
the loss is the student's cross-entropy plus ``alpha`` times the KL divergence at ``temperature``.  The
learning rate warms up for ``warmup_iters`` and decays to zero (cosine) at ``max_iters``.  Writes to
OUT_DIR ``student.pth`` (the distilled model at the last iteration, with the plan), ``dvclive/`` and
``work/``; METRICS_JSON gets the time and the last validation mIoU.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cpd.pipeline.params import DistillParams, read_section
from cpd.pipeline.stage import log, run_stage, write_json

STAGE = "distill"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="python -m stages.distill", description=__doc__.splitlines()[0])
    parser.add_argument("train_dir", help="the train stage's output folder")
    parser.add_argument("prune_dir", help="the prune stage's output folder")
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("metrics", help="metrics JSON to write")
    return parser.parse_args(argv)


def distill(params: DistillParams, train: Path, pruned: Path, out: Path) -> None:
    """Distill the pruned model ``pruned`` from ``train``'s baseline with ``params``: mmengine's work dir is
    ``out/work`` (``iter_<max_iters>.pth``), DVCLive's ``out/dvclive``."""
    from cpd.mm import load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.launch import run_config
    from cpd.mm.recipe import distill_config

    quiet_console()  # mmengine's environment and config dumps go to the log files only
    cfg = distill_config(load_config(train / "config.py"), params, train / "baseline.pth", pruned,
                         out / "work", out / "dvclive")
    run_config(cfg, params.gpus)


def work(args: argparse.Namespace) -> None:
    """Validate the params, then distill."""
    params: DistillParams = read_section(STAGE)
    from cpd.mm.evaluation import save_student

    train, pruned, out = Path(args.train_dir), Path(args.prune_dir) / "pruned.pth", Path(args.out_dir)
    log(STAGE, f"distilling {pruned} for {params.max_iters} iterations (T={params.temperature}, "
               f"alpha={params.alpha}, lr {params.lr})")
    start = time.perf_counter()
    distill(params, train, pruned, out)
    model = save_student(out / "work" / f"iter_{params.max_iters}.pth", pruned, out / "student.pth")
    metrics = {"iters": params.max_iters, "seconds": round(time.perf_counter() - start, 1),
               "params": sum(p.numel() for p in model.parameters())}
    write_json(args.metrics, metrics)
    log(STAGE, f"distilled student -> {out / 'student.pth'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage; return the exit code."""
    args = parse_args(argv)
    return run_stage(STAGE, lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
