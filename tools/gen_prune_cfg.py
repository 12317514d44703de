"""Write the dependency JSON of an mmseg, mmpretrain or mmdet config: the same as ``cpd comb``.

Usage:
    python tools/gen_prune_cfg.py CONFIG --out deps.json [--size H W] [--exclude NAME ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    import cpd.cli  # noqa: F401
except ModuleNotFoundError:  # run from a checkout that was not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpd.cli import add_comb_arguments, run


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``cpd comb`` arguments and run it.

    Args:
        argv: the arguments after the script name; ``sys.argv[1:]`` by default.

    Returns:
        The exit code: 0 success, 2 a usage error.
    """
    parser = argparse.ArgumentParser(
        prog="gen_prune_cfg.py", description="Trace an OpenMMLab model and write its dependency JSON."
    )
    add_comb_arguments(parser)
    return run(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
