"""Plain convolutional patterns: chains, depthwise, grouped, transposed, 1-d and norm variants.

Every network ends in a submodule called ``head`` whose output is the network's output (logits).
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 5


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Return a padded conv (no bias) followed by BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class ConvBnReluChain(nn.Module):
    """Three conv-bn-relu layers in sequence: each conv's output channels couple with the next input."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(3, 8), conv_bn_relu(8, 16), conv_bn_relu(16, 16))
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class DepthwiseSeparable(nn.Module):
    """Depthwise conv (groups == channels) between pointwise convs: dw channels follow their input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 8)
        self.dw = conv_bn_relu(8, 8, groups=8)
        self.pw = conv_bn_relu(8, 16, k=1)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pw(self.dw(self.stem(x))))


class DepthwiseMultiplier(nn.Module):
    """Depthwise conv with channel multiplier 2: output channels 2i, 2i+1 belong to input channel i."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 8)
        self.dw = conv_bn_relu(8, 16, groups=8)
        self.pw = conv_bn_relu(16, 16, k=1)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pw(self.dw(self.stem(x))))


class GroupedConv(nn.Module):
    """A groups=4 conv between pointwise convs: channels can only go in equal numbers per group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.pw1 = conv_bn_relu(16, 16, k=1)
        self.grouped = conv_bn_relu(16, 16, groups=4)
        self.pw2 = conv_bn_relu(16, 16, k=1)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pw2(self.grouped(self.pw1(self.stem(x)))))


class ChannelShuffle(nn.Module):
    """ShuffleNet unit: grouped 1x1, shuffle via view/transpose/reshape, depthwise, grouped 1x1."""

    groups = 4

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.gconv1 = conv_bn_relu(16, 16, k=1, groups=self.groups)
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16))
        self.gconv2 = conv_bn_relu(16, 16, k=1, groups=self.groups)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gconv1(self.stem(x))
        b, c, h, w = x.shape
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.head(self.gconv2(self.dw(x)))


class PixelShuffleUp(nn.Module):
    """PixelShuffle(2) folds each run of 4 channels into space: channels couple in blocks of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16, stride=2)
        self.expand = nn.Conv2d(16, 24, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.head = nn.Conv2d(6, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.shuffle(self.expand(self.stem(x)))))


class ConvTransposeDecoder(nn.Module):
    """Strided encoder then ConvTranspose2d decoder; transposed weights are (in, out/groups, kh, kw)."""

    def __init__(self) -> None:
        super().__init__()
        self.down1 = conv_bn_relu(3, 8, stride=2)
        self.down2 = conv_bn_relu(8, 16, stride=2)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(16, 8, 2, 2, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(8, 8, 4, 2, 1, groups=2), nn.ReLU())
        self.head = nn.Conv2d(8, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up2(self.up1(self.down2(self.down1(x)))))


class Conv1dStack(nn.Module):
    """Conv1d-bn-relu stack over (B, C, L) sequences with a 1x1 Conv1d head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Conv1d(16, 16, 3, padding=1, groups=2),
            nn.ReLU(),
            nn.Conv1d(16, 12, 5, padding=2),
            nn.ReLU(),
        )
        self.head = nn.Conv1d(12, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class GroupNormBlock(nn.Module):
    """GroupNorm(4, 16): statistics are shared inside each group of 4 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1)
        self.gn1 = nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.gn2 = nn.GroupNorm(4, 16)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.gn1(self.conv1(x)))
        return self.head(torch.relu(self.gn2(self.conv2(x))))


class LayerNormPermute(nn.Module):
    """LayerNorm over channels applied channels-last via permute(0, 2, 3, 1) and back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1)
        self.norm = nn.LayerNorm(16)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(torch.relu(self.conv2(nn.functional.gelu(x))))


class FlattenLinear(nn.Module):
    """VGG-style flatten(1) into Linear: channel c owns Linear inputs c*H*W .. (c+1)*H*W - 1."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(3, 8, stride=2), conv_bn_relu(8, 8, stride=2))
        self.fc = nn.Linear(8 * 4 * 4, 32)
        self.head = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.features(x).flatten(1))))


class GapClassifier(nn.Module):
    """Conv features, global average pooling, flatten and a Linear classifier as output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(3, 8), conv_bn_relu(8, 16, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))
