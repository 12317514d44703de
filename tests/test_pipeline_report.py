"""The summary stage's table, sparsity rows, DVCLive curves and PNG plots."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cpd.pipeline.report import plot_sparsity, plot_training, read_curve, sparsity_rows, summarize, write_csv

pytest.importorskip("matplotlib")


def model(miou: float, params: int, flops: int, sparsity: float) -> dict:
    return {"mIoU": miou, "aAcc": 0.9, "mAcc": 0.8, "params": params, "flops": flops, "sparsity": sparsity}


EVALUATION = {"target": 0.5, "baseline": model(0.83, 400, 28, 0.0), "pruned": model(0.73, 200, 14, 0.5),
              "distilled": model(0.81, 200, 14, 0.5),
              "thresholds": {"0.3": model(0.79, 270, 19, 0.32), "0.5": model(0.73, 200, 14, 0.5)}}
LAT = {"median_ms": 0.7, "p90_ms": 0.8}
EXPORT = {"provider": "CPUExecutionProvider", "speedup": 1.7, "flops_ratio": 2.0,
          "latency": {"baseline": LAT, "distilled": {"median_ms": 0.41, "p90_ms": 0.5},
                      "thr_0.3": {"median_ms": 0.52, "p90_ms": 0.6}}}


def test_summary_has_both_models_and_the_ratios() -> None:
    s = summarize(EVALUATION, EXPORT)
    assert s["baseline"]["latency_ms"] == 0.7 and s["distilled"]["latency_ms"] == 0.41
    assert s["pruned"]["latency_ms"] == 0.41  # same architecture as the distilled model
    assert s["mIoU_drop"] == pytest.approx(0.02) and s["params_ratio"] == 2.0
    assert (s["speedup"], s["flops_ratio"], s["target"]) == (1.7, 2.0, 0.5)


def test_rows_follow_sparsity_and_write_as_csv(tmp_path: Path) -> None:
    rows = sparsity_rows(EVALUATION, EXPORT)
    assert [r["model"] for r in rows] == ["baseline", "pruned@0.3", "pruned@0.5", "distilled"]
    assert [r["latency_ms"] for r in rows] == [0.7, 0.52, 0.41, 0.41]
    no_curve = sparsity_rows(EVALUATION, {"latency": {"baseline": LAT}})
    assert [r["latency_ms"] for r in no_curve] == [0.7, "", "", ""]
    assert [r["speedup"] for r in rows] == [1.0, round(0.7 / 0.52, 4), round(0.7 / 0.41, 4), round(0.7 / 0.41, 4)]
    assert [r["speedup"] for r in no_curve] == [1.0, "", "", ""]
    with write_csv(rows, tmp_path / "s.csv").open() as f:
        back = list(csv.DictReader(f))
    assert back[1]["model"] == "pruned@0.3" and float(back[1]["sparsity"]) == 0.32


def test_plots_are_png_files(tmp_path: Path) -> None:
    live = tmp_path / "live" / "plots" / "metrics"
    (live / "train").mkdir(parents=True)
    (live / "train" / "loss.tsv").write_text("step\tloss\n10\t1.5\n20\t0.9\n")
    assert read_curve(live / "train" / "loss.tsv") == ([10.0, 20.0], [1.5, 0.9])
    assert read_curve(live / "val" / "mIoU.tsv") == ([], [])
    for path in (plot_training({"train": tmp_path / "live", "missing": tmp_path / "nowhere"}, tmp_path / "t.png"),
                 plot_sparsity(sparsity_rows(EVALUATION, {"latency": {"baseline": LAT}}), tmp_path / "s.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
