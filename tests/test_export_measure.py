"""The latency meter: it times a model against the unpruned reference on the runtime it names.

No assertion is on a timing (a shared, noisy machine): only that the meter reports positive seconds,
scales by the baseline it is given, counts its measurements and refuses what it cannot run.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from cpd.export.measure import LatencyMeter, resolve_runtime  # noqa: E402
from cpd.export.runtime import CUDA, ort_providers  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1))


@pytest.mark.parametrize("runtime", ["onnxruntime-cpu", "torch-eager"])
def test_meter_scales_the_candidate_by_the_reference(runtime: str, tmp_path) -> None:
    meter = LatencyMeter(net(), torch.randn(1, 3, 32, 32), runtime=runtime, warmup=1, runs=4, rounds=2,
                         workdir=tmp_path, baseline=0.5)
    assert meter.baseline == 0.5  # a latency model's baseline: its sparsity is 1 - time / reference time
    seconds = meter(net())
    assert seconds > 0 and meter.count == (1 if runtime != "torch-eager" else 0)
    assert meter.info["runs"] == 4 and meter.info["against_reference"]
    if runtime == "onnxruntime-cpu":
        assert (tmp_path / "candidate.onnx").is_file() and meter.info["exporter"] == "torchscript"


def test_dynamo_meter_times_the_graph_the_export_stage_ships(tmp_path) -> None:
    """``exporter='dynamo'``: the candidate file is what :func:`cpd.export.export_onnx` writes (the export
    stage's graph: same nodes, dynamic batch), not the TorchScript graph."""
    import onnx

    from cpd.export import export_onnx

    x = torch.randn(1, 3, 32, 32)
    meter = LatencyMeter(net(), x, warmup=1, runs=2, rounds=1, workdir=tmp_path / "m", exporter="dynamo")
    meter(net())
    assert meter.info["exporter"] == "dynamo"
    shipped = onnx.load(str(export_onnx(net(), x, tmp_path / "shipped.onnx")))
    timed = onnx.load(str(tmp_path / "m" / "candidate.onnx"))
    assert [n.op_type for n in timed.graph.node] == [n.op_type for n in shipped.graph.node]
    assert timed.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis is symbolic
    fast = LatencyMeter(net(), x, warmup=1, runs=2, rounds=1, workdir=tmp_path / "f")
    assert fast.info["exporter"] == "torchscript"
    assert not onnx.load(str(tmp_path / "f" / "reference.onnx")).graph.input[0].type.tensor_type.shape.dim[0].dim_param


def test_meter_refuses_unknown_runtimes_and_counts() -> None:
    with pytest.raises(ValueError, match="runtime='tensorrt'"):
        LatencyMeter(net(), torch.randn(1, 3, 8, 8), runtime="tensorrt")
    with pytest.raises(ValueError, match="exporter='tvm'"):
        LatencyMeter(net(), torch.randn(1, 3, 8, 8), exporter="tvm")
    from cpd.export.measure import EXPORTERS
    from cpd.mm.latency import EXPORTERS as HOOK_EXPORTERS

    assert HOOK_EXPORTERS == EXPORTERS  # the hook validates its option without importing onnxruntime
    with pytest.raises(ValueError, match="runs >= rounds"):
        LatencyMeter(net(), torch.randn(1, 3, 8, 8), runs=2, rounds=3)


def test_auto_provider_says_when_it_falls_back_to_the_cpu() -> None:
    lines: list[str] = []
    runtime = resolve_runtime("auto", lines.append)
    if CUDA in ort_providers():
        assert runtime == "onnxruntime-cuda" and lines == []
    else:
        assert runtime == "onnxruntime-cpu" and len(lines) == 1 and "timing on the CPU" in lines[0]
    assert resolve_runtime("torch") == "torch-eager"
    with pytest.raises(ValueError, match="provider='tpu'"):
        resolve_runtime("tpu")
