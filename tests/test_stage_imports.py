"""A stage imports the ``cpd`` of its own repository, and so do the processes it starts, whatever else is
installed or on ``PYTHONPATH`` (here a decoy ``cpd`` that fails on import stands for another checkout)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Run from the repository root as DVC does (``python -m stages.<name>``), then from a child in another folder.
PROBE = """
import subprocess, sys
import stages
import cpd
print(cpd.__file__)
child = "import cpd; print(cpd.__file__)"
print(subprocess.run([sys.executable, "-c", child], cwd="/", capture_output=True, text=True, check=True).stdout)
"""


@pytest.fixture
def decoy(tmp_path: Path) -> dict[str, str]:
    """An environment whose PYTHONPATH holds a ``cpd`` that raises when imported."""
    (tmp_path / "cpd").mkdir()
    (tmp_path / "cpd" / "__init__.py").write_text("raise ImportError('the decoy cpd was imported')\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def test_a_stage_and_its_children_import_this_repository(decoy: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=decoy, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    here, child = done.stdout.split()
    assert Path(here) == Path(child) == ROOT / "cpd" / "__init__.py"


def test_a_stage_script_starts_with_the_decoy_on_the_path(decoy: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "stages.data", "--help"], cwd=ROOT, env=decoy,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: python -m stages.data" in done.stdout, done.stderr[-2000:]


def test_torchrun_workers_get_the_repository_first_on_pythonpath(decoy: dict[str, str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mmengine")
    from cpd.mm.launch import child_env

    monkeypatch.setenv("PYTHONPATH", decoy["PYTHONPATH"])
    env = child_env()
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), decoy["PYTHONPATH"]]
