"""ONNX export: models export with a dynamic batch, onnxruntime matches torch, failures are reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from cpd.export import (  # noqa: E402
    OnnxMismatchError,
    benchmark_latency,
    compare_onnx,
    export_onnx,
    onnx_roundtrip,
    ort_providers,
)
from zoo import ZOO  # noqa: E402

# A small conv net and a tiny transformer.
MODELS = ["residual_blocks", "vit_manual_mhsa"]
CASES = pytest.mark.parametrize("name", MODELS)


def _batch(name: str, size: int) -> tuple[torch.Tensor, ...]:
    """The zoo inputs of ``name`` with ``size`` samples (seeded, all different)."""
    generator = torch.Generator().manual_seed(size)
    return tuple(torch.randn((size, *t.shape[1:]), generator=generator) for t in ZOO[name].inputs())


@CASES
def test_export_matches_torch_at_batch_1_and_3(name: str, tmp_path: Path) -> None:
    case = ZOO[name]
    model = case.build()
    path = export_onnx(model, case.inputs(), tmp_path / "model.onnx")
    assert path == tmp_path / "model.onnx" and path.is_file()
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    for size in (1, 3):
        report = compare_onnx(path, model, _batch(name, size), atol=1e-4, rtol=0.0, strict=True)
        assert report["ok"] and report["batch"] == size
        assert report["provider"] == "CPUExecutionProvider"
        assert max(report["max_abs_diff"]) <= 1e-4


@CASES
def test_roundtrip_reports_success(name: str) -> None:
    case = ZOO[name]
    report = onnx_roundtrip(case.build(), case.inputs())
    assert set(report) == {"ok", "max_abs_diff", "error", "seconds", "dynamic_batch", "dynamic_error"}
    assert report["ok"], report["error"]
    assert report["dynamic_batch"], report["dynamic_error"]
    assert report["error"] is None
    assert 0.0 <= report["max_abs_diff"] <= 1e-4
    assert report["seconds"] > 0.0


def test_batch_one_example_still_exports_a_dynamic_batch(tmp_path: Path) -> None:
    model = ZOO["residual_blocks"].build()
    path = export_onnx(model, _batch("residual_blocks", 1), tmp_path / "m.onnx")
    assert compare_onnx(path, model, _batch("residual_blocks", 3), strict=True)["ok"]


def test_export_restores_train_mode_and_leaves_weights(tmp_path: Path) -> None:
    model = ZOO["conv_bn_relu_chain"].build()
    model.train()
    model.head.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, ZOO["conv_bn_relu_chain"].inputs(), tmp_path / "m.onnx")
    assert model.training and not model.head.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class TwoHeads(nn.Module):
    """A trunk and two heads; the forward used for export returns a nested list."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 2, 1)


def _two_heads_forward(model: TwoHeads, x: torch.Tensor) -> list:
    feats = model.trunk(x).relu()
    return [model.a(feats), [model.b(feats)]]


def test_forward_fn_list_becomes_one_output_each(tmp_path: Path) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TwoHeads()
    x = torch.randn(2, 3, 8, 8)
    path = export_onnx(model, x, tmp_path / "m.onnx", forward_fn=_two_heads_forward)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["output0", "output1"]
    report = compare_onnx(path, model, torch.randn(3, 3, 8, 8), forward_fn=_two_heads_forward, strict=True)
    assert len(report["max_abs_diff"]) == 2


def test_compare_flags_a_mismatch(tmp_path: Path) -> None:
    case = ZOO["residual_blocks"]
    model = case.build()
    path = export_onnx(model, case.inputs(), tmp_path / "m.onnx")
    with torch.no_grad():
        model.head.weight.add_(0.5)
    report = compare_onnx(path, model, case.inputs())
    assert not report["ok"] and report["failures"]
    with pytest.raises(OnnxMismatchError, match="output 0"):
        compare_onnx(path, model, case.inputs(), strict=True)


class NotTensors(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> dict:
        return {"logits": self.conv(x), "note": "text"}


def test_failed_export_writes_nothing_and_roundtrip_reports_it(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(TypeError, match="must return tensors"):
        export_onnx(NotTensors(), torch.randn(2, 3, 4, 4), path)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]

    report = onnx_roundtrip(NotTensors(), torch.randn(2, 3, 4, 4))
    assert report["ok"] is False
    assert "TypeError" in report["error"] and "must return tensors" in report["error"]


def test_inputs_must_share_a_batch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one batch size"):
        export_onnx(ZOO["shared_two_inputs"].build(), (torch.randn(2, 3, 16, 16), torch.randn(3, 3, 16, 16)),
                    tmp_path / "m.onnx")


def test_two_input_model_roundtrips() -> None:
    case = ZOO["shared_two_inputs"]
    report = onnx_roundtrip(case.build(), case.inputs())
    assert report["ok"], report["error"]


def test_importing_cpd_export_loads_no_onnx() -> None:
    code = "import sys, json, cpd.export; print(json.dumps(sorted(sys.modules)))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}
    assert loaded & {"onnx", "onnxruntime", "onnxscript"} == set()


def test_ort_providers_end_with_cpu() -> None:
    providers = ort_providers()
    assert providers[-1] == "CPUExecutionProvider"
    assert set(providers) <= {"CUDAExecutionProvider", "CPUExecutionProvider"}


def test_benchmark_returns_sane_numbers(tmp_path: Path) -> None:
    case = ZOO["residual_blocks"]
    path = export_onnx(case.build(), case.inputs(), tmp_path / "m.onnx")
    result = benchmark_latency(path, warmup=2, runs=10, provider="CPUExecutionProvider", threads=1)
    assert result["batch"] == 1 and result["input_shapes"] == [[1, 3, 16, 16]]
    assert 0.0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert result["mean_ms"] > 0.0 and result["runs"] == 10 and result["warmup"] == 2
    assert result["provider"] == "CPUExecutionProvider" and result["threads"] == 1
    assert isinstance(result["onnxruntime"], str) and result["onnxruntime"]

    explicit = benchmark_latency(path, (1, 3, 16, 16), warmup=0, runs=1)
    assert explicit["provider"] in ort_providers() and explicit["threads"] == 0
    with pytest.raises(ValueError, match="does not fit"):
        benchmark_latency(path, (1, 4, 16, 16), runs=1)
    with pytest.raises(ValueError, match="runs"):
        benchmark_latency(path, runs=0)


def test_check_runs_the_onnx_roundtrip() -> None:
    from cpd.check import check

    case = ZOO["residual_blocks"]
    report = check(case.build(), case.inputs(), ratio=0.3, onnx=True)
    assert report.onnx is not None and report.onnx["ok"], report.onnx
    assert report.ok, report.failures


@pytest.mark.mm
def test_segformer_exports_with_all_heads() -> None:
    pytest.importorskip("mmseg")
    from cpd.mm import build_model, example_inputs, seg_forward

    size = (64, 64)
    model = build_model("segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py", input_size=size)
    report = onnx_roundtrip(model, example_inputs(model, size=size), seg_forward)
    assert report["ok"], report["error"]
