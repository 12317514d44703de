"""Run a training config in this process, or on several GPUs (CPU processes) through mmengine's launcher.

:func:`run_config` writes the config to ``<work_dir>/run_config.py`` first, so every run leaves the exact
config it trained, and a multi-process run reads the same file: ``torchrun --nproc_per_node N -m
cpd.mm.launch <file>`` starts one process per GPU with mmengine's ``pytorch`` launcher (``gloo`` on
machines without CUDA, see :func:`cpd.mm.train.train_config`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mmengine.config import Config

from cpd.mm.console import quiet_if_asked
from cpd.mm.train import train

CONFIG_NAME = "run_config.py"


def run_config(cfg: Config, gpus: int = 1) -> Path:
    """Train ``cfg`` (its ``work_dir`` must be set) on ``gpus`` processes; return the work dir.

    Args:
        cfg: a full config with ``work_dir``.
        gpus: 1: train in this process; more: one process per GPU through ``torch.distributed.run``.

    Raises:
        ValueError: ``gpus`` is not a positive integer, or the config has no ``work_dir``.
        subprocess.CalledProcessError: a multi-process run failed.
    """
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ValueError(f"gpus={gpus!r} must be an integer >= 1")
    if not cfg.get("work_dir"):
        raise ValueError("the config needs a work_dir")
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / CONFIG_NAME
    cfg.dump(str(path))
    if gpus == 1:
        train(str(path), work_dir=work)
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                   "-m", "cpd.mm.launch", str(path)]
        print("launching:", " ".join(command), flush=True)
        subprocess.run(command, check=True, env=child_env())
    return work


def child_env() -> dict[str, str]:
    """This process's environment with the folder holding this ``cpd`` first on ``PYTHONPATH``.

    The processes torchrun starts import ``cpd.mm.launch`` by name: without this, they would import
    whichever ``cpd`` is installed (an editable install of another checkout), not the code of this run.
    """
    import cpd

    root = str(Path(cpd.__file__).resolve().parents[1])
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, *rest])}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of one process of a ``torchrun`` launch: train the config file ``argv[0]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: torchrun --nproc_per_node N -m cpd.mm.launch CONFIG", file=sys.stderr)
        return 2
    os.environ.setdefault("LOCAL_RANK", "0")
    quiet_if_asked()
    train(args[0], launcher="pytorch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
