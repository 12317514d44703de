"""benchmarks/latency.py's report: the pruner's estimate of a kept cut, and the table from stored results."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "latency.py"
RESULTS = ROOT / "benchmarks" / "results" / "latency.json"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(predicted: float, corrected: float, measured: float) -> dict:
    return {"predicted": predicted, "corrected": corrected, "measured": measured, "decided": measured}


def test_estimate_is_the_kept_cuts_first_timing(bench) -> None:
    # the kept cut (predicted 0.5) was timed twice: the second estimate is anchored on the first measurement
    row = {"checks": [check(0.3, 0.28, 0.31), check(0.5, 0.45, 0.52), check(0.5, 0.51, 0.49)]}
    assert bench.steered(row) == pytest.approx(1 / (1 - 0.45))
    assert bench.steered({"checks": [check(0.2, 0.25, 0.2)]}) == pytest.approx(1 / 0.75)
    assert bench.steered({"checks": []}) is None
    assert bench.steered({}) is None


def test_table_from_the_stored_results_gives_every_latency_row_an_estimate(bench) -> None:
    saved = json.loads(RESULTS.read_text())
    args = argparse.Namespace(**saved["args"])
    text = bench.markdown(saved["results"], args, "python benchmarks/latency.py")
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "x |" in line]
    header = next(line for line in text.splitlines() if line.startswith("| model")).split(" | ")
    column = header.index("pruner's estimate (error)")
    expected = [(res["arch"], bench.steered(res["rows"][f"latency@{1 - 1 / t:.3f}"]))
                for res in saved["results"] for t in bench.TARGETS]
    assert [(cells[0].lstrip("| "), float(cells[column].split("x")[0])) for cells in rows] == [
        (arch, pytest.approx(speed, abs=0.005)) for arch, speed in expected]
