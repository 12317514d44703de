"""Prunable stand-ins for mmseg attention modules whose code derives the head width from the stream width.

mmseg's Swin ``WindowMSA`` and Twins ``LocallyGroupedSelfAttention`` reshape ``qkv`` with
``C // self.num_heads`` and the attention output with ``C``, where ``C`` is the *input* width: after pruning
heads (or the residual stream) that arithmetic no longer gives the head width.  The stand-ins compute the same
function with ``-1`` in those places; they are swapped in by re-classing, so names and weights do not change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.models.backbones.beit import BEiTAttention
from mmseg.models.backbones.mae import MAEAttention
from mmseg.models.backbones.swin import WindowMSA
from mmseg.models.backbones.twins import LocallyGroupedSelfAttention

from cpd.mm.window_attention import window_attention
from cpd.surgery.adapters import register_adapter


class PrunableWindowMSA(WindowMSA):
    """Swin window attention computing exactly what ``WindowMSA`` does, for any head count and stream width."""

    forward = window_attention


class PrunableLocallyGroupedSelfAttention(LocallyGroupedSelfAttention):
    """Twins LSA computing exactly what the original does, for any head count and stream width."""

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw_shape
        ws = self.window_size
        x = x.view(b, h, w, c)
        pad_r = (ws - w % ws) % ws
        pad_b = (ws - h % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1:-1]
        _h, _w = hp // ws, wp // ws
        mask = torch.zeros((1, hp, wp), device=x.device)
        mask[:, -pad_b:, :].fill_(1)
        mask[:, :, -pad_r:].fill_(1)
        x = x.reshape(b, _h, ws, _w, ws, c).transpose(2, 3)
        mask = mask.reshape(1, _h, ws, _w, ws).transpose(2, 3).reshape(1, _h * _w, ws * ws)
        attn_mask = mask.unsqueeze(2) - mask.unsqueeze(3)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, -1000.0).masked_fill(attn_mask == 0, 0.0)
        qkv = self.qkv(x).reshape(b, _h * _w, ws * ws, 3, self.num_heads, -1).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop((attn + attn_mask.unsqueeze(2)).softmax(dim=-1))
        attn = (attn @ v).transpose(2, 3).reshape(b, _h, _w, ws, ws, -1)
        x = attn.transpose(2, 3).reshape(b, _h * ws, _w * ws, -1)
        if pad_r > 0 or pad_b > 0:
            x = x[:, :h, :w, :].contiguous()
        x = x.reshape(b, n, -1)
        return self.proj_drop(self.proj(x))


def _beit_forward(self, x: torch.Tensor) -> torch.Tensor:
    """BEiT/MAE attention with the output reshaped by ``-1`` instead of the input width."""
    B, N, _ = x.shape
    if self.bias == "qv_bias":
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
        qkv = F.linear(input=x, weight=self.qkv.weight, bias=qkv_bias)
    else:
        qkv = self.qkv(x)
    qkv = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * self.scale) @ k.transpose(-2, -1)
    if self.relative_position_bias_table is not None:
        wh, ww = self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            wh * ww + 1, wh * ww + 1, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    attn = self.attn_drop(attn.softmax(dim=-1))
    x = (attn @ v).transpose(1, 2).reshape(B, N, -1)
    return self.proj_drop(self.proj(x))


PrunableBEiTAttention = type("PrunableBEiTAttention", (BEiTAttention,), {"forward": _beit_forward,
                                                                         "__module__": __name__})
PrunableMAEAttention = type("PrunableMAEAttention", (MAEAttention,), {"forward": _beit_forward,
                                                                      "__module__": __name__})


@register_adapter(BEiTAttention)
def _adapt_beit(m: BEiTAttention) -> bool:
    m.__class__ = PrunableBEiTAttention
    return True


@register_adapter(MAEAttention)
def _adapt_mae(m: MAEAttention) -> bool:
    m.__class__ = PrunableMAEAttention
    return True


@register_adapter(WindowMSA)
def _adapt_window_msa(m: WindowMSA) -> bool:
    m.__class__ = PrunableWindowMSA
    return True


@register_adapter(LocallyGroupedSelfAttention)
def _adapt_lsa(m: LocallyGroupedSelfAttention) -> bool:
    m.__class__ = PrunableLocallyGroupedSelfAttention
    return True
