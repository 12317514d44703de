"""Export to ONNX and check the result with onnxruntime: the only package that imports onnx.

``onnx`` and ``onnxruntime`` are imported inside the functions that need them, so importing this
package (or ``cpd``) pulls in neither; they come with the ``export`` extra.
"""

from cpd.export.deploy import export_checked, onnx_roundtrip, prove_onnx
from cpd.export.latency import compare_latency, pick_provider
from cpd.export.onnx_export import export_onnx
from cpd.export.runtime import OnnxMismatchError, benchmark_latency, compare_onnx, ort_providers

__all__ = ["OnnxMismatchError", "benchmark_latency", "compare_latency", "compare_onnx", "export_checked",
           "export_onnx", "onnx_roundtrip", "ort_providers", "pick_provider", "prove_onnx"]
