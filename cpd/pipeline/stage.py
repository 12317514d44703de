"""What every stage script shares: a clean failure on a bad params value, the thread count, timing, and
outputs written atomically (a killed stage leaves its old file or its new one, never half of one)."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cpd.files import write_json_atomic
from cpd.pipeline.params import PARAMS_FILE, ParamsError
from cpd.safe_load import BadFileError

DVC_FILE = "dvc.yaml"
EXIT_FAILED = 1
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
        The exit code: 0; ``EXIT_BAD_PARAMS``; ``EXIT_FAILED`` after a missing or damaged file (one line)
        or any other error (its traceback printed).  Both failures end with how to restore the stage's last outputs (DVC removed them
        before running the stage).
    """
    start = time.perf_counter()
    print(f"[{name}] starting (torch threads: {limit_threads()})", flush=True)
    try:
        work()
    except ParamsError as e:
        print(f"[{name}] error: bad value in {PARAMS_FILE}: {e}; {restore_hint(name)}", file=sys.stderr, flush=True)
        return EXIT_BAD_PARAMS
    except (BadFileError, FileNotFoundError) as e:  # a missing or damaged input file: its one line says it all
        print(f"[{name}] error: {e}; {restore_hint(name)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except Exception:
        traceback.print_exc()
        print(f"[{name}] failed; {restore_hint(name)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    print(f"[{name}] done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


def restore_hint(name: str, dvc_file: str | os.PathLike[str] = DVC_FILE) -> str:
    """What brings a failed stage's outputs back: DVC removed them before the stage ran.

    The cached ones come back with ``dvc checkout <stage>``; those kept in git (``cache: false`` in
    ``dvc_file``, such as the metrics JSON) with ``git checkout``.
    """
    hint = f"`dvc checkout {name}` brings back its last outputs"
    kept = outputs_kept_in_git(name, dvc_file)
    return hint + (f", `git checkout -- {' '.join(kept)}` the ones in git" if kept else "")


def outputs_kept_in_git(name: str, dvc_file: str | os.PathLike[str] = DVC_FILE) -> list[str]:
    """The outputs, metrics and plots of stage ``name`` that ``dvc_file`` marks ``cache: false`` ([] if unknown)."""
    import yaml

    try:
        stage = (yaml.safe_load(Path(dvc_file).read_text()).get("stages") or {}).get(name) or {}
    except Exception:  # a hint only: an unreadable dvc.yaml must not hide the stage's own error
        return []
    kept = []
    for key in ("outs", "metrics", "plots"):
        for entry in stage.get(key) or []:
            if isinstance(entry, dict):
                kept += [path for path, opts in entry.items() if (opts or {}).get("cache", True) is False]
    return kept


def log(name: str, message: str) -> None:
    """Print one progress line of stage ``name``."""
    print(f"[{name}] {message}", flush=True)


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON (keys in insertion order) atomically, creating the folder."""
    return write_json_atomic(dict(data), path, indent=2)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by an earlier stage.

    Raises:
        FileNotFoundError: naming the file and that its stage must run first.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())
