"""Patterns where tensors fork and join: residual adds, concat, split/chunk, slicing, gating, reuse."""

from __future__ import annotations

import torch
from torch import nn

from .conv import NUM_CLASSES, conv_bn_relu


class BasicBlock(nn.Module):
    """ResNet basic block; a strided 1x1 conv-bn downsample when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(self.conv1(x))) + self.downsample(x))


class ResidualBlocks(nn.Module):
    """Identity basic block then a downsampling one: the residual add ties stem, conv2 and downsample."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 8)
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.stem(x))))


class InceptionConcat(nn.Module):
    """Three branches of unequal width concatenated along channels, then a fusing conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 8)
        self.branch1 = conv_bn_relu(8, 4, k=1)
        self.branch3 = nn.Sequential(conv_bn_relu(8, 4, k=1), conv_bn_relu(4, 6))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_relu(8, 2, k=1))
        self.fuse = conv_bn_relu(12, 16, k=1)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.branch1(x), self.branch3(x), self.branch_pool(x)], dim=1)
        return self.head(self.fuse(x))


class SplitConcat(nn.Module):
    """torch.split into unequal parts [4, 8], a conv on each, concat in swapped order."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 12)
        self.left = conv_bn_relu(4, 4)
        self.right = conv_bn_relu(8, 8, groups=8)
        self.fuse = conv_bn_relu(12, 16, k=1)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = torch.split(self.stem(x), [4, 8], dim=1)
        return self.head(self.fuse(torch.cat([self.right(right), self.left(left)], dim=1)))


class ChunkConcat(nn.Module):
    """ShuffleNetV2-style: chunk(2), one half passes through untouched, the other through convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.branch = nn.Sequential(conv_bn_relu(8, 8, k=1), conv_bn_relu(8, 8, groups=8))
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, work = self.stem(x).chunk(2, dim=1)
        return self.head(torch.cat([keep, self.branch(work)], dim=1))


class GhostSlice(nn.Module):
    """GhostNet module: concat a primary and a cheap depthwise conv, keep only x[:, :12]."""

    def __init__(self) -> None:
        super().__init__()
        self.primary = conv_bn_relu(3, 8, k=1)
        self.cheap = conv_bn_relu(8, 8, groups=8)
        self.post = conv_bn_relu(12, 12)
        self.head = nn.Conv2d(12, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary(x)
        x = torch.cat([primary, self.cheap(primary)], dim=1)[:, :12]
        return self.head(self.post(x))


class DenseConcat(nn.Module):
    """DenseNet-style growth: each layer sees the concat of all earlier outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 8)
        self.grow1 = conv_bn_relu(8, 4)
        self.grow2 = conv_bn_relu(12, 4)
        self.transition = conv_bn_relu(16, 8, k=1)
        self.head = nn.Conv2d(8, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.stem(x)
        x1 = self.grow1(x0)
        x2 = self.grow2(torch.cat([x0, x1], dim=1))
        return self.head(self.transition(torch.cat([x0, x1, x2], dim=1)))


class SqueezeExcite(nn.Module):
    """SE gating x * sigmoid(fc(gap(x))): the gate's output channels couple with the gated tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(3, 16), conv_bn_relu(16, 16))
        self.reduce = nn.Conv2d(16, 4, 1)
        self.expand = nn.Conv2d(4, 16, 1)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.head(x * gate)


class GluGate(nn.Module):
    """GLU: chunk(2) then a * sigmoid(b), so channel i pairs with channel i + 8 of the same conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 8)
        self.proj = nn.Conv2d(8, 16, 3, 1, 1)
        self.head = nn.Conv2d(8, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(self.stem(x)).chunk(2, dim=1)
        return self.head(value * torch.sigmoid(gate))


class SharedTwoInputs(nn.Module):
    """One conv-bn-relu applied to two different inputs whose features are then added."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = conv_bn_relu(3, 8)
        self.fuse = conv_bn_relu(8, 8)
        self.head = nn.Conv2d(8, NUM_CLASSES, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(self.fuse(self.shared(a) + self.shared(b)))


class SharedTwice(nn.Module):
    """One conv applied twice in sequence: its output channels are also its input channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 8)
        self.body = nn.Conv2d(8, 8, 3, 1, 1)
        self.head = nn.Conv2d(8, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.body(x))
        return self.head(torch.relu(self.body(x)))


class ConvNeXtLayerScale(nn.Module):
    """ConvNeXt block: dw conv, channels-last LayerNorm + MLP, per-channel gamma, residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, 2)
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.norm = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.gamma = nn.Parameter(torch.full((16,), 0.5))
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.gamma * self.fc2(nn.functional.gelu(self.fc1(y)))
        return self.head(x + y.permute(0, 3, 1, 2))
