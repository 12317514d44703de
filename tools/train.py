"""Train an mmseg config with mmengine's Runner (mmsegmentation's tools/train.py, which its pip package lacks).

Usage:
    python tools/train.py CONFIG [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--resume]
                          [--launcher {none,pytorch,slurm,mpi}]

Several GPUs (or CPU processes): tools/dist_train.sh CONFIG GPUS [ARGS ...].
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    import cpd.mm  # noqa: F401  (installs the mmcv-lite shim before mmseg is imported)
except ModuleNotFoundError as err:  # run from a checkout that was not pip-installed
    if err.name != "cpd":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cpd.mm  # noqa: F401

from mmengine.config import DictAction

from cpd.mm.train import LAUNCHERS, train

__all__ = ["main", "parse_args", "train"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="train.py", description="Train a segmentor.")
    parser.add_argument("config", help="config file, or the name of a config shipped with mmseg")
    parser.add_argument("--work-dir", help="folder for logs and checkpoints (default: work_dirs/<config>)")
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, default={},
        help="override config values, KEY=VALUE with dotted keys (e.g. max_iters=500 data_root=PATH)",
    )
    parser.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the work dir")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none", help="job launcher")
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Train; return the exit code (0 on success)."""
    args = parse_args(argv)
    train(args.config, args.work_dir, args.cfg_options, args.resume, args.launcher)
    return 0


if __name__ == "__main__":
    sys.exit(main())
