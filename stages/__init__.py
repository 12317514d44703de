"""The DVC stage scripts, run as ``python -m stages.<name>`` from the repository root (see ``dvc.yaml``).

Importing this package puts the repository that holds it first on the import path, before any
installed ``cpd`` (an editable install points at whichever checkout ran ``pip install -e``), and
first on ``PYTHONPATH`` for the processes a stage starts (``torchrun -m cpd.mm.launch``, data-loader
workers).  So a stage runs the code of the commit DVC hashes for it: in a clone, in an experiment's
temporary copy (``dvc exp run --queue``, ``--temp``) and in the workspace alike.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])

if sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)
_inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != ROOT]
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, *_inherited])
