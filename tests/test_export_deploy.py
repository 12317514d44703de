"""export_checked (export + checker + agreement at batches 2 and 1) and compare_latency (interleaved timing)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from cpd.export import OnnxMismatchError, compare_latency, export_checked, ort_providers, pick_provider  # noqa: E402
from cpd.export import deploy  # noqa: E402


def small(width: int) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 4, 1)).eval()


def test_export_checked_proves_the_file(tmp_path: Path) -> None:
    report = export_checked(small(8), torch.randn(1, 3, 16, 16), tmp_path / "m.onnx", atol=1e-5, rtol=1e-5)
    assert report["batches"] == [2, 1] and report["bytes"] == (tmp_path / "m.onnx").stat().st_size
    assert 0.0 <= report["max_abs_diff"] <= 1e-5 + 1e-5 * report["max_abs"]
    assert report["provider"] == "CPUExecutionProvider"


def test_export_checked_enforces_the_tolerance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = deploy.compare_onnx

    def stricter(*args, **kwargs):
        kwargs.update(atol=-1.0, rtol=0.0)  # nothing can pass
        return real(*args, **kwargs)

    monkeypatch.setattr(deploy, "compare_onnx", stricter)
    with pytest.raises(OnnxMismatchError, match="max \\|onnx - torch\\|"):
        export_checked(small(8), torch.randn(1, 3, 16, 16), tmp_path / "m.onnx")


def test_compare_latency_interleaves_and_reports_each_file(tmp_path: Path) -> None:
    x = torch.randn(1, 3, 32, 32)
    paths = {name: export_checked(small(w), x, tmp_path / f"{name}.onnx")["file"]
             for name, w in (("wide", 64), ("narrow", 8))}
    result = compare_latency(paths, (1, 3, 32, 32), warmup=2, runs=25, rounds=4, provider="cpu", threads=1)
    assert list(result) == ["wide", "narrow"]
    for stats in result.values():
        assert stats["runs"] == 25 and stats["rounds"] == 4 and stats["batch"] == 1
        assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
        assert stats["provider"] == "CPUExecutionProvider" and stats["threads"] == 1
    with pytest.raises(ValueError, match="runs >= 1"):
        compare_latency(paths, runs=0)


def test_pick_provider() -> None:
    assert pick_provider("cpu") == "CPUExecutionProvider"
    assert pick_provider("auto") == ort_providers()[0]
    with pytest.raises(ValueError, match="provider='tpu'"):
        pick_provider("tpu")
    if "CUDAExecutionProvider" not in ort_providers():
        with pytest.raises(ValueError, match="cannot run CUDAExecutionProvider"):
            pick_provider("cuda")
