"""Token patterns: layout round trips, three ways of writing multi-head attention, ViT loose parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import NUM_CLASSES

DIM = 24
HEADS = 3


class ManualAttention(nn.Module):
    """Packed qkv Linear, reshape(B, N, 3, heads, dim).permute, explicit softmax(q k^T) v, proj."""

    def __init__(self, dim: int = DIM, heads: int = HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TorchMHA(nn.Module):
    """nn.MultiheadAttention(batch_first=True): packed in_proj_weight (3E, E) plus out_proj."""

    def __init__(self, dim: int = DIM, heads: int = HEADS) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


class SdpaAttention(nn.Module):
    """Separate q/k/v Linears into 2 heads of 8 (inner width 16 != model width 24) and SDPA."""

    def __init__(self, dim: int = DIM, heads: int = 2, head_dim: int = 8) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, heads * head_dim)
        self.v = nn.Linear(dim, heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, self.heads, self.head_dim).transpose(1, 2) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), x + mlp(norm(x)); optional layer-scale gammas."""

    def __init__(self, attn: nn.Module, dim: int = DIM, layer_scale: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.gamma1 = nn.Parameter(torch.full((dim,), 0.5)) if layer_scale else None
        self.gamma2 = nn.Parameter(torch.full((dim,), 0.5)) if layer_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.norm1(x))
        x = x + (y if self.gamma1 is None else self.gamma1 * y)
        y = self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return x + (y if self.gamma2 is None else self.gamma2 * y)


class TokenTransformer(nn.Module):
    """(B, N, 16) tokens: Linear embed, one pre-norm block, final LayerNorm, per-token Linear head."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.embed = nn.Linear(16, DIM)
        self.block = Block(attn)
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.block(self.embed(x))))


class TokenRoundTrip(nn.Module):
    """Conv patch embed, flatten(2).transpose(1, 2), LayerNorm + Linear on tokens, back to (B, C, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 16)
        self.conv = nn.Conv2d(16, 16, 3, 1, 1)
        self.head = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x)
        b, c, h, w = x.shape
        t = F.gelu(self.fc(self.norm(x.flatten(2).transpose(1, 2))))
        x = t.transpose(1, 2).reshape(b, c, h, w)
        return self.head(torch.relu(self.conv(x)))


class VitLoose(nn.Module):
    """ViT: cls_token concatenated to patch tokens, pos_embed added, layer-scale gammas, head on cls."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, DIM) * 0.5)
        self.block = Block(ManualAttention(), layer_scale=True)
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.block(x))[:, 0])
