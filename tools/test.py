"""Evaluate a checkpoint on a config's test split and print the metrics as JSON.

Usage:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--out FILE] [--trust]

CHECKPOINT is read weights-only (``cpd.mm.checkpoints``): a file that would run code is refused with one
line naming the global it asked for; ``--trust`` reads that one file in full.
"""

from __future__ import annotations

import argparse
import json
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

from cpd.mm.train import evaluate
from cpd.safe_load import BadFileError

__all__ = ["evaluate", "main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(prog="test.py", description="Evaluate a segmentor checkpoint.")
    parser.add_argument("config", help="config file, or the name of a config shipped with mmseg")
    parser.add_argument("checkpoint", help="checkpoint file (.pth)")
    parser.add_argument("--work-dir", help="folder for the evaluation log (default: work_dirs/<config>)")
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, default={},
        help="override config values, KEY=VALUE with dotted keys (e.g. data_root=PATH)",
    )
    parser.add_argument("--out", help="also write the metrics to this JSON file")
    parser.add_argument(
        "--trust", action="store_true",
        help="read CHECKPOINT in full although it holds more than weights and plain data (this runs code "
             "from the file: only for a file you trust; other files stay weights-only)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate and print the metrics; return the exit code (0 on success, 2 for a bad checkpoint file)."""
    args = parse_args(argv)
    try:
        metrics = evaluate(args.config, args.checkpoint, args.work_dir, args.cfg_options,
                           trusted=[args.checkpoint] if args.trust else ())
    except (FileNotFoundError, BadFileError) as e:
        print(f"test.py: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(metrics, indent=2, sort_keys=True)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
