"""The element count of benchmarks/latency_two_rate_check.py: outputs of every operation but products and views."""
import torch
from torch import nn

from benchmarks.latency_two_rate_check import WorkCounter
from cpd.flops import _run


class Tiny(nn.Module):
    def __init__(self, k: int, m: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(k, m))

    def forward(self, x):
        y = (x @ self.w).softmax(-1)  # a product (MACs), then n*m elements
        return y.view(-1).unsqueeze(0) + 1.0  # two views (none), then n*m elements


def test_elements_count_outputs_of_non_product_non_view_ops():
    n, k, m = 5, 7, 3
    c = _run(WorkCounter(), Tiny(k, m), (torch.randn(n, k),), None)
    assert c.macs == n * k * m
    assert c.elements == 2 * n * m


def test_elements_shrink_with_the_width_the_softmax_runs_over():
    n, k = 4, 6
    wide = _run(WorkCounter(), Tiny(k, 8), (torch.randn(n, k),), None).elements
    narrow = _run(WorkCounter(), Tiny(k, 2), (torch.randn(n, k),), None).elements
    assert wide == 4 * narrow
