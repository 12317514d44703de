"""Functionally identical stand-ins for modules whose code ties widths that pruning must untie.

``nn.MultiheadAttention`` requires its projections to be exactly ``embed_dim`` wide, so it could never
lose a head.  :class:`PrunableMultiheadAttention` computes the same function with explicit operators that
allow any head count; it is swapped in by re-classing the module, so parameter names, the state dict and
every attribute stay the same.  Adapters register by class with :func:`register_adapter`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cpd.surgery.fixers import register_fixer

ADAPTERS: dict[type, Callable[[nn.Module], bool]] = {}


def register_adapter(cls: type) -> Callable[[Callable[[nn.Module], bool]], Callable[[nn.Module], bool]]:
    """Register ``fn(module) -> bool`` that adapts instances of exactly ``cls`` in place (True if it did)."""

    def deco(fn: Callable[[nn.Module], bool]) -> Callable[[nn.Module], bool]:
        ADAPTERS[cls] = fn
        return fn

    return deco


def prepare_(model: nn.Module) -> int:
    """Swap every module that has a registered adapter for its prunable equivalent, in place.

    Returns:
        How many modules were adapted.
    """
    count = 0
    for mod in model.modules():
        fn = ADAPTERS.get(type(mod))
        if fn is not None and fn(mod):
            count += 1
    return count


class PrunableMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with the same parameters and results, but any number of (whole) heads.

    Only ``num_heads`` and the widths of the projections may change; ``head_dim`` (and so the softmax
    scale) is fixed, which is why heads are removed whole.
    """

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) if t.dim() == 3 else t for t in (query, key, value))
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(k.shape[0], 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(v.shape[0], 1, -1)], dim=1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        bsz, tgt, src, h = q.shape[0], q.shape[1], k.shape[1], self.num_heads
        q = q.reshape(bsz, tgt, h, -1).transpose(1, 2)
        k = k.reshape(bsz, src, h, -1).transpose(1, 2)
        v = v.reshape(bsz, src, h, -1).transpose(1, 2)
        logits = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        if attn_mask is not None:
            mask = attn_mask.reshape(-1, h, tgt, src) if attn_mask.dim() == 3 else attn_mask
            logits = logits.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
        if is_causal and attn_mask is None:
            causal = torch.ones(tgt, src, dtype=torch.bool, device=q.device).triu(1)
            logits = logits.masked_fill(causal, float("-inf"))
        if key_padding_mask is not None:
            kpm = key_padding_mask.reshape(bsz, 1, 1, src)
            logits = logits.masked_fill(kpm, float("-inf")) if kpm.dtype == torch.bool else logits + kpm
        attn = F.dropout(logits.softmax(dim=-1), p=self.dropout, training=self.training)
        out = (attn @ v).transpose(1, 2).reshape(bsz, tgt, -1)
        out = self.out_proj(out)
        weights = None
        if need_weights:
            weights = attn.mean(dim=1) if average_attn_weights else attn
            if unbatched:
                weights = weights.squeeze(0)
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


@register_adapter(nn.MultiheadAttention)
def adapt_mha(m: nn.Module) -> bool:
    if m.add_zero_attn:
        return False
    m.__class__ = PrunableMultiheadAttention
    return True


@register_fixer(PrunableMultiheadAttention)
def fix_mha(m: PrunableMultiheadAttention, before: dict) -> None:
    m.embed_dim = m.out_proj.weight.shape[0]
    if m._qkv_same_embed_dim:
        m.kdim = m.vdim = m.in_proj_weight.shape[1]
    else:
        m.kdim, m.vdim = m.k_proj_weight.shape[1], m.v_proj_weight.shape[1]
    m.out_proj.in_features = m.out_proj.weight.shape[1]
    m.out_proj.out_features = m.out_proj.weight.shape[0]
