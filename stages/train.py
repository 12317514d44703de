"""Stage ``train``: the baseline model, which is also the teacher of the later stages.

Usage: python -m stages.train DATA_DIR OUT_DIR METRICS_JSON

Reads the ``train`` section of params.yaml.  Trains ``train.config`` on the data of DATA_DIR (or, with
``train.checkpoint`` set, takes that checkpoint instead of training) and writes to OUT_DIR:
``baseline.pth`` (weights only), ``config.py`` (the config as trained: the model every later stage
rebuilds, the data, the evaluator), ``dvclive/`` (training curves) and ``work/`` (mmengine's log and
checkpoint).  METRICS_JSON gets the iterations, the time and the last validation mIoU (top-1 for a classifier).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cpd.pipeline.dataset import read_dataset
from cpd.pipeline.params import ParamsError, TrainParams, read_section
from cpd.pipeline.stage import log, run_stage, write_json

STAGE = "train"
#: The folder of config files that the train stage's deps in dvc.yaml cover (with their ``_base_`` files).
CONFIG_DIR = "configs"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="the data stage's output folder")
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("metrics", help="metrics JSON to write")
    return parser.parse_args(argv)


def last_checkpoint(work: Path, max_iters: int) -> Path:
    """The checkpoint mmengine wrote last in ``work``."""
    pointer = work / "last_checkpoint"
    if pointer.is_file() and Path(pointer.read_text().strip()).is_file():
        return Path(pointer.read_text().strip())
    return work / f"iter_{max_iters}.pth"


def last_val(live_dir: Path) -> dict[str, float]:
    """The last validation metrics DVCLive recorded, as fractions (``val_mIoU``, ``val_aAcc``; ``val_top1``, ...)."""
    from cpd.mm.evaluation import TASK_METRICS

    path = live_dir / "metrics.json"
    val = json.loads(path.read_text()).get("val", {}) if path.is_file() else {}
    flat: dict[str, float] = {}
    stack = [("", val)]
    while stack:  # DVCLive nests a name with slashes ("accuracy/top1") as dicts
        prefix, node = stack.pop()
        for key, value in node.items() if isinstance(node, dict) else ():
            if isinstance(value, dict):
                stack.append((f"{prefix}{key}/", value))
            elif isinstance(value, (int, float)):
                flat[f"{prefix}{key}"] = value
    names = {"mIoU": "mIoU", "aAcc": "aAcc", **TASK_METRICS["classification"]}
    return {f"val_{names[k]}": round(v / 100.0, 6) for k, v in sorted(flat.items()) if k in names}


def check_paths(params: TrainParams) -> None:
    """The config must be a file or a shipped mmseg config, the checkpoint (if any) a file.

    A config file outside ``CONFIG_DIR`` gets a warning: DVC tracks ``train.config`` by its value, and
    the file's content only through the deps of dvc.yaml, which cover ``CONFIG_DIR``.  (A shipped
    config is fixed by the installed mmsegmentation, pinned in requirements/constraints.txt.)
    """
    from cpd.mm import resolve_config

    try:
        resolve_config(params.config)
    except FileNotFoundError as e:
        raise ParamsError(f"train.config={params.config!r}: {e}") from None
    config = Path(params.config)
    if config.is_file() and not config.resolve().is_relative_to(Path(CONFIG_DIR).resolve()):
        log(STAGE, f"warning: train.config={params.config!r} is outside {CONFIG_DIR}/, which dvc.yaml's train "
                   f"deps cover: an edit of it will not rerun train (move it under {CONFIG_DIR}/)")
    if params.checkpoint is not None and not Path(params.checkpoint).is_file():
        raise ParamsError(f"train.checkpoint={params.checkpoint!r}: no such file (null: train the baseline)")


def work(args: argparse.Namespace) -> None:
    """Validate the params, then train (or take the given checkpoint)."""
    params: TrainParams = read_section(STAGE)
    check_paths(params)
    from cpd.mm.console import quiet_console
    from cpd.mm.evaluation import checkpoint_source, save_baseline
    from cpd.mm.launch import run_config
    from cpd.mm.recipe import baseline_config, dump_config, model_only

    quiet_console()  # mmengine's environment and config dumps go to the log files only

    out = Path(args.out_dir)
    data_root = read_dataset(args.data_dir)["data_root"]
    cfg = baseline_config(params, data_root, out / "work", out / "dvclive")
    start = time.perf_counter()
    metrics: dict[str, object] = {"trained": params.checkpoint is None}
    if params.checkpoint is None:
        log(STAGE, f"training {params.config} for {params.max_iters} iterations on {params.gpus} process(es)")
        run_config(cfg, params.gpus)
        source = last_checkpoint(out / "work", params.max_iters)
        metrics.update({"iters": params.max_iters, "seconds": round(time.perf_counter() - start, 1),
                        **last_val(out / "dvclive")})
    else:
        log(STAGE, f"using the checkpoint {params.checkpoint} (no training)")
        source = Path(params.checkpoint)
    model = save_baseline(cfg, source, out / "baseline.pth",
                          meta={"config": params.config, "from": checkpoint_source(source)})
    dump_config(model_only(cfg), out / "config.py")
    metrics["params"] = sum(p.numel() for p in model.parameters())
    log(STAGE, f"baseline: {metrics['params']} parameters -> {out / 'baseline.pth'}")
    write_json(args.metrics, metrics)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage; return the exit code."""
    args = parse_args(argv)
    return run_stage(STAGE, lambda: work(args))


if __name__ == "__main__":
    sys.exit(main())
