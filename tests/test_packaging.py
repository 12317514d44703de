"""pyproject.toml, requirements/*.txt, the README and .ci/run tell the same story."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
EXTRAS = PROJECT["optional-dependencies"]
TEST_COMMAND = "pip install -c requirements/constraints.txt -e '.[all]' && python -m pytest -m \"not slow\" -n 2"


def _requirements(name: str) -> list[str]:
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))]


def test_torch_is_pinned_exactly_everywhere() -> None:
    assert "torch==2.13.0" in PROJECT["dependencies"]
    assert "torch==2.13.0" in _requirements("base.txt")
    assert "torch==2.13.0" in _requirements("constraints.txt")
    every = PROJECT["dependencies"] + [req for reqs in EXTRAS.values() for req in reqs]
    assert [req for req in every if re.match(r"torch\b", req)] == ["torch==2.13.0"]


def test_requirement_files_mirror_pyproject() -> None:
    assert _requirements("base.txt") == PROJECT["dependencies"]
    assert _requirements("full.txt") == EXTRAS["all"]


def test_all_is_the_union_of_the_other_extras() -> None:
    parts = [req for name in ("mm", "export", "pipeline", "test") for req in EXTRAS[name]]
    assert EXTRAS["all"] == parts


def test_constraints_pin_every_direct_dependency() -> None:
    pinned = {line.split("==")[0].lower() for line in _requirements("constraints.txt")}
    every = PROJECT["dependencies"] + EXTRAS["all"]
    names = {re.split(r"[<>=!~\[ ]", req)[0].lower() for req in every}
    assert names <= pinned


def test_ci_runs_the_readme_test_command() -> None:
    assert TEST_COMMAND in (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert TEST_COMMAND in ci


def test_pytest_markers_and_timeout() -> None:
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert {marker.split(":")[0] for marker in options["markers"]} == {"slow", "mm"}
    assert options["timeout"] > 0
    assert PROJECT["scripts"]["cpd"] == "cpd.cli:main"
