"""Swin-style window attention with a relative position bias table indexed by a buffer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import DIM, HEADS
from .conv import NUM_CLASSES


def relative_position_index(window: int) -> torch.Tensor:
    """Return the (window**2, window**2) index into a ((2 * window - 1) ** 2)-row bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """Attention inside one window; the (L, heads) bias table is gathered, permuted, added to logits."""

    def __init__(self, dim: int = DIM, heads: int = HEADS, window: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.5)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias.unsqueeze(0)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class SwinStage(nn.Module):
    """Patch embed to an 8x8 map, channels-last Swin block over 4x4 windows, conv head per pixel."""

    window = 4

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, 2, 2)
        self.norm1 = nn.LayerNorm(DIM)
        self.attn = WindowAttention(window=self.window)
        self.norm2 = nn.LayerNorm(DIM)
        self.fc1 = nn.Linear(DIM, 2 * DIM)
        self.fc2 = nn.Linear(2 * DIM, DIM)
        self.head = nn.Conv2d(DIM, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        s = self.window
        win = self.norm1(x).view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        win = self.attn(win).view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = x + win
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x.permute(0, 3, 1, 2))
