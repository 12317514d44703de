"""Multi-scale patterns: an FPN/UperNet-like neck and a UNet with skip concatenation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import NUM_CLASSES, conv_bn_relu


def upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``x`` to the spatial size of ``ref``."""
    return F.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)


class FpnNeck(nn.Module):
    """Three backbone levels, lateral 1x1s, top-down upsample + add, concat of levels, fuse conv."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = conv_bn_relu(3, 8)
        self.c2 = conv_bn_relu(8, 12, stride=2)
        self.c3 = conv_bn_relu(12, 16, stride=2)
        self.laterals = nn.ModuleList(nn.Conv2d(c, 8, 1) for c in (8, 12, 16))
        self.fpn_convs = nn.ModuleList(conv_bn_relu(8, 8) for _ in range(3))
        self.fuse = conv_bn_relu(24, 8)
        self.head = nn.Conv2d(8, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.c1(x)
        f2 = self.c2(f1)
        f3 = self.c3(f2)
        l1, l2, l3 = (lat(f) for lat, f in zip(self.laterals, (f1, f2, f3)))
        l2 = l2 + upsample_to(l3, l2)
        l1 = l1 + upsample_to(l2, l1)
        p1, p2, p3 = (conv(lvl) for conv, lvl in zip(self.fpn_convs, (l1, l2, l3)))
        fused = self.fuse(torch.cat([p1, upsample_to(p2, p1), upsample_to(p3, p1)], dim=1))
        return self.head(fused)


class TinyUnet(nn.Module):
    """Two-level UNet: max-pool encoder, ConvTranspose and bilinear upsampling, skip concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = conv_bn_relu(3, 8)
        self.enc2 = conv_bn_relu(8, 16)
        self.bottleneck = conv_bn_relu(16, 16)
        self.up2 = nn.ConvTranspose2d(16, 16, 2, 2)
        self.dec2 = conv_bn_relu(32, 16)
        self.dec1 = conv_bn_relu(24, 8)
        self.head = nn.Conv2d(8, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottleneck(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([e1, upsample_to(d2, e1)], dim=1))
        return self.head(d1)
