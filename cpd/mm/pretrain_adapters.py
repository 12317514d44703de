"""Prunable stand-ins for mmpretrain attention modules whose code fixes widths from attributes.

mmpretrain's ``MultiheadAttention`` (ViT, DeiT, ...) reshapes ``qkv`` with ``self.head_dims``
and the attention output with ``self.embed_dims``; its ``WindowMSA`` (Swin) reshapes with
``C // self.num_heads`` and ``C``, ``C`` being the *input* width. After pruning heads, head
channels or the residual stream, those numbers no longer give the widths. The stand-ins compute
the same function with ``-1`` in those places; they are swapped in by re-classing (see
:func:`cpd.surgery.adapters.register_adapter`), so names and weights do not change. Importing this
module imports ``mmpretrain.models``; :mod:`cpd.mm.tasks` imports it when mmpretrain is loaded.
"""
from __future__ import annotations

import torch
from mmpretrain.models.utils.attention import MultiheadAttention, WindowMSA

from cpd.mm.window_attention import window_attention
from cpd.surgery.adapters import register_adapter


class PrunableMultiheadAttention(MultiheadAttention):
    """ViT attention computing exactly what ``MultiheadAttention`` does, for any head count and width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn_drop = self.attn_drop if self.training else 0.0
        x = self.scaled_dot_product_attention(q, k, v, dropout_p=attn_drop)
        x = x.transpose(1, 2).reshape(B, N, -1)
        x = self.out_drop(self.gamma1(self.proj_drop(self.proj(x))))
        if self.v_shortcut:
            x = v.squeeze(1) + x
        return x


class PrunableWindowMSA(WindowMSA):
    """Swin window attention computing exactly what ``WindowMSA`` does, for any head count and width."""

    forward = window_attention


@register_adapter(MultiheadAttention)
def _adapt_mha(m: MultiheadAttention) -> bool:
    m.__class__ = PrunableMultiheadAttention
    return True


@register_adapter(WindowMSA)
def _adapt_window_msa(m: WindowMSA) -> bool:
    m.__class__ = PrunableWindowMSA
    return True
