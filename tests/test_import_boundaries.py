"""The core knows torch only: mmengine/mmseg/mmcv live in cpd.mm, DVC in stages/, ONNX in export code."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cpd"
MM_LIBS = frozenset({"mmengine", "mmseg", "mmcv", "mmpretrain", "mmdet"})
PIPELINE_LIBS = frozenset({"dvc", "dvclive"})
ONNX_LIBS = frozenset({"onnx", "onnxruntime", "onnxscript"})
HEAVY = MM_LIBS | PIPELINE_LIBS | ONNX_LIBS


def _loaded_by(statement: str) -> set[str]:
    """Top-level names in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}


def _core_modules() -> list[str]:
    """``cpd`` and its torch-only subpackages that exist so far."""
    names = ["cpd", "cpd.cli", "cpd.check", "cpd.flops"]
    for sub in ("graph", "surgery", "importance", "prune", "distill", "data", "pipeline"):
        if importlib.util.find_spec(f"cpd.{sub}") is not None:
            names.append(f"cpd.{sub}")
    return names


@pytest.mark.parametrize("module", _core_modules())
def test_core_import_pulls_in_no_heavy_library(module: str) -> None:
    loaded = _loaded_by(f"import {module}")
    assert loaded & HEAVY == set()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_cpd_mm_imports_openmmlab() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _sources()
        if "mm" not in path.relative_to(PACKAGE).parts[:1] and _imports(path) & MM_LIBS
    ]
    assert offenders == []


# The mmengine hook that writes DVCLive metric files during training (it never runs git or DVC).
DVCLIVE_ALLOWED = frozenset({"cpd/mm/dvclive_hook.py"})


def test_no_dvc_inside_the_package() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in _sources()
        if _imports(p) & PIPELINE_LIBS
        and not (p.relative_to(ROOT).as_posix() in DVCLIVE_ALLOWED and _imports(p) & PIPELINE_LIBS == {"dvclive"})
    ]
    assert offenders == []


@pytest.mark.mm
def test_importing_cpd_mm_loads_no_dvc() -> None:
    pytest.importorskip("mmseg")
    assert _loaded_by("import cpd.mm, cpd.mm.dvclive_hook") & PIPELINE_LIBS == set()


def test_onnx_only_in_export_code() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _sources()
        if _imports(path) & ONNX_LIBS and not any("export" in part for part in path.parts)
    ]
    assert offenders == []
