"""benchmarks/kd.py runs end to end in its smoke setting (tiny model, data and budgets)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("mmseg")
pytest.importorskip("sklearn")

pytestmark = [pytest.mark.mm, pytest.mark.timeout(300)]
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "kd.py"


def test_smoke_run_writes_its_results(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_kd", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    before = doc.read_text() if doc.exists() else None
    out = tmp_path / "kd.json"
    argv = ["--smoke", "--data", str(tmp_path / "data"), "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert {"teacher_miou", "pruned_miou", "plain_miou", "kd_miou", "seconds_total"} <= set(result)
    assert len(result["plain_miou"]) == len(result["kd_miou"]) == 1
    assert (tmp_path / "work" / "prune" / "thr_0.5.pth").is_file()
    assert (doc.read_text() if doc.exists() else None) == before  # a smoke run never touches the report
    text = bench.table(result)
    assert "| pruned + KD fine-tuning |" in text and "| teacher (unpruned) |" in text
