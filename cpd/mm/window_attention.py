"""Swin's window attention with widths read from the tensors, shared by the mmseg and mmpretrain stand-ins.

mmseg's and mmpretrain's ``WindowMSA`` are the same module: both reshape ``qkv`` with ``C // num_heads`` and
the output with ``C``, ``C`` being the input width, which stops being the head width once heads or the
residual stream are pruned.  :func:`window_attention` computes exactly what their ``forward`` does with ``-1``
in those places; each library's stand-in class uses it as its ``forward``.
"""
from __future__ import annotations

import torch
from torch import nn


def window_attention(self: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``WindowMSA.forward`` for any head count and stream width (``self`` is the ``WindowMSA``)."""
    B, N, _ = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * self.scale) @ k.transpose(-2, -1)
    wh, ww = self.window_size
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(wh * ww, wh * ww, -1)
    attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(B // nw, nw, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, self.num_heads, N, N)
    attn = self.attn_drop(self.softmax(attn))
    x = (attn @ v).transpose(1, 2).reshape(B, N, -1)
    return self.proj_drop(self.proj(x))
