"""Masks on norms that compute statistics over channels: the live-statistics hooks make them exact."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cpd.prune import PruneConfig, Pruner


pytestmark = pytest.mark.usefixtures("one_thread")


class Tokens(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2, self.head = nn.Linear(8, 16), norm, nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(self.norm(self.fc1(x)))))


class Image(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.conv1, self.norm, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), norm, nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.norm(self.conv1(x))))))


CASES = {
    "layer_norm": (lambda: Tokens(nn.LayerNorm(16)), (2, 5, 8)),
    "layer_norm_no_affine": (lambda: Tokens(nn.LayerNorm(16, elementwise_affine=False)), (2, 5, 8)),
    "rms_norm": (lambda: Tokens(nn.RMSNorm(16)), (2, 5, 8)),
    "group_norm_one_group": (lambda: Image(nn.GroupNorm(1, 16)), (2, 3, 8, 8)),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_norm_statistics_over_live_channels(case: tuple) -> None:
    build, shape = case
    torch.manual_seed(0)
    model = build()
    for p in model.norm.parameters():
        nn.init.uniform_(p, 0.5, 1.5)
    x = torch.randn(shape)
    pruner = Pruner(model, (x,), PruneConfig(criterion="random", interval=1, round_to=1, thresholds=(0.3,)))
    norm_group = next(g for g in pruner.groups if any(m.name in ("norm.weight", "norm:normalized_shape")
                                                      for m in g.members))
    pruner.masks.kill_({norm_group.id: [0, 3, 7]})
    assert pruner.verify() <= 1e-5
    assert pruner.verify((torch.randn(shape),)) <= 1e-5
