"""What every stage script shares: a clean failure on a bad params value, the thread count, timing, JSON files."""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cpd.pipeline.params import PARAMS_FILE, ParamsError

EXIT_BAD_PARAMS = 2
THREADS_VAR = "OMP_NUM_THREADS"


def limit_threads() -> int:
    """Run torch on one thread unless ``OMP_NUM_THREADS`` is set; return the thread count.

    On a CPU shared with other jobs, torch's threads wait for busy cores: a training step of the
    embedded default took 0.6 s on two threads and 0.1 s on one on a loaded 2-core machine.  Set
    ``OMP_NUM_THREADS`` (e.g. to the core count of an idle machine) to choose.
    """
    import torch

    if THREADS_VAR not in os.environ:
        os.environ[THREADS_VAR] = "1"  # for the processes the stage starts (data loader workers, torchrun)
        torch.set_num_threads(1)
    return torch.get_num_threads()


def run_stage(name: str, work: Callable[[], Any]) -> int:
    """Run a stage's work; a bad params value ends it with one line naming the key and exit code 2.

    Args:
        name: the stage (printed in the progress lines).
        work: the stage's work; it reads and validates its params before doing anything else.

    Returns:
        The exit code: 0, or ``EXIT_BAD_PARAMS``.  Other errors propagate with their traceback.
    """
    start = time.perf_counter()
    print(f"[{name}] starting (torch threads: {limit_threads()})", flush=True)
    try:
        work()
    except ParamsError as e:
        print(f"[{name}] error: bad value in {PARAMS_FILE}: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_PARAMS
    print(f"[{name}] done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


def log(name: str, message: str) -> None:
    """Print one progress line of stage ``name``."""
    print(f"[{name}] {message}", flush=True)


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON (keys in insertion order), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by an earlier stage.

    Raises:
        FileNotFoundError: naming the file and that its stage must run first.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())
