"""Adaptive pooling as fixed averaging matrices: exact against torch, and exportable by TorchScript.

PSPNet's and UperNet's pyramid pooling (3 and 6 bins of a 32x32 map) is what the TorchScript exporter
refuses; the latency meter exports it this way instead of going through the slow dynamo exporter.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpd.export.pooling import averaging_matrix, exportable_pooling, matrix_adaptive_avg_pool2d


@pytest.mark.parametrize("shape, output_size", [((2, 4, 32, 32), 3), ((1, 3, 32, 32), 6), ((1, 2, 7, 11), (3, 5)),
                                                ((1, 2, 9, 10), (None, 4)), ((1, 1, 5, 5), 7),
                                                ((1, 2, 64, 64), 1), ((3, 13, 17), (4, None))])
def test_matrix_pooling_equals_adaptive_pooling(shape, output_size) -> None:
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(matrix_adaptive_avg_pool2d(x, output_size), F.adaptive_avg_pool2d(x, output_size))


def test_averaging_matrix_rows_average_and_cover_every_input() -> None:
    m = averaging_matrix(32, 6, dtype=torch.float64)
    torch.testing.assert_close(m.sum(1), torch.ones(6, dtype=torch.float64))
    assert bool((m.sum(0) > 0).all())  # overlapping bins, none of the input left out
    with pytest.raises(ValueError, match="bins=0"):
        averaging_matrix(4, 0)


class PyramidPooling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pools = nn.ModuleList(nn.AdaptiveAvgPool2d(s) for s in (1, 2, 3, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.cat([y] + [F.interpolate(p(y), size=y.shape[-2:], mode="bilinear", align_corners=False)
                                for p in self.pools], 1)


def test_patched_model_exports_with_torchscript_and_matches_torch(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model, x = PyramidPooling().eval(), torch.randn(1, 3, 32, 32)
    expected = model(x)
    with pytest.raises(Exception, match="adaptive_avg_pool2d"):
        torch.onnx.export(model, (x,), str(tmp_path / "plain.onnx"), dynamo=False, opset_version=17)
    with torch.no_grad(), exportable_pooling(model) as patched:
        assert patched == 4
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        torch.onnx.export(model, (x,), str(tmp_path / "pooled.onnx"), dynamo=False, opset_version=17)
    assert all("forward" not in vars(p) for p in model.pools)  # the modules are as they were
    session = ort.InferenceSession(str(tmp_path / "pooled.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), expected.detach(), rtol=1e-4, atol=1e-5)


def test_meter_times_pyramid_pooling_through_the_fast_exporter(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from cpd.export.measure import LatencyMeter

    meter = LatencyMeter(PyramidPooling(), torch.randn(1, 3, 32, 32), warmup=0, runs=2, rounds=1, workdir=tmp_path)
    assert meter.info["exporter"] == "torchscript" and meter(PyramidPooling()) > 0
