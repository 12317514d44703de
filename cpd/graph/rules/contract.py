"""Contractions: matrix products, convolutions and attention.

A contraction ties the labels that meet on the summed axis; labels that live on the summed axis *and* on a
batch axis (an attention head: ``q`` is ``(B*heads, N, head_dim)``) become one coarse label per batch index,
so a head is removed whole.  Batch indices of both operands are paired, so their coarse labels are tied.
"""
from __future__ import annotations

import torch

from cpd.graph.fields import align, compress, compress_all, expand_dims, support
from cpd.graph.rules.registry import register_rule
from cpd.graph.rules.pointwise import union_broadcast

HEAD_ATTRS = ("num_heads", "heads", "n_heads", "num_attention_heads", "head_num")


def _coarse_over(ctx, f: torch.Tensor, shape, reduce_dims: set[int]) -> torch.Tensor | None:
    """One coarse label per index of the kept dimensions, standing for the labels along ``reduce_dims``."""
    keep = [d for d in range(f.dim()) if d not in reduce_dims]
    g = expand_dims(f, shape, support(f))
    perm = keep + sorted(reduce_dims)
    g = g.permute(perm)
    kept_shape = list(g.shape[: len(keep)])
    rows = g.reshape(int(torch.tensor(kept_shape).prod()) if kept_shape else 1, -1)
    uniq, inverse = torch.unique(rows, dim=0, return_inverse=True)
    labels = torch.tensor([ctx.space.coarse_label(r) for r in uniq], dtype=torch.int64)
    out = labels[inverse].reshape(kept_shape)
    for d in sorted(reduce_dims):
        out = out.unsqueeze(d)
    return compress(out)


def reduce_fields(ctx, fields, shape, reduce_dims: set[int]) -> list[torch.Tensor]:
    """Fields after summing over ``reduce_dims`` (kept as size-1 dimensions)."""
    res = []
    for f in fields:
        sup = support(f)
        if not sup & reduce_dims:
            res.append(f)
        elif sup - reduce_dims:
            c = _coarse_over(ctx, f, shape, reduce_dims)
            if c is not None:
                res.append(c)
    return res


def note_heads(ctx, coarse: torch.Tensor, batch_dims: list[int]) -> None:
    """If the current module keeps a head count that matches, tie that attribute to the head labels."""
    module = ctx.module_obj
    if module is None:
        return
    flat = coarse.reshape(-1) if coarse.dim() else coarse.reshape(1)
    seen: list[int] = []
    for v in flat.tolist():
        if v != 0 and v not in seen:
            seen.append(v)
    for attr in HEAD_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value == len(seen) and value > 1:
            axis = ctx.attr_axis(attr, value)
            ctx.space.union(axis, torch.tensor(seen, dtype=torch.int64))
            return


def _block_unpaired(ctx, reps_a: list[torch.Tensor], reps_b: list[torch.Tensor], where: str) -> None:
    """Block labels on the summed axis that meet an unlabelled element of the other operand."""
    if not reps_a or not reps_b:
        return
    cover_a = torch.stack(torch.broadcast_tensors(*[r != 0 for r in reps_a])).any(0)
    cover_b = torch.stack(torch.broadcast_tensors(*[r != 0 for r in reps_b])).any(0)
    for reps, cover in ((reps_a, cover_b), (reps_b, cover_a)):
        for r in reps:
            rr, cc = torch.broadcast_tensors(r, cover)
            if not bool(cc.all()):
                ctx.space.block(rr[~cc], f"summed against unlabelled elements in {where}")


def contract(ctx, a_fields, a_shape, b_fields, b_shape, out_shape) -> list[torch.Tensor]:
    """Fields of ``a @ b`` for operands of shape ``(*batch, n, k)`` and ``(*batch, k, m)``."""
    n = len(out_shape)
    a_shape = (1,) * (n - len(a_shape)) + tuple(a_shape)
    b_shape = (1,) * (n - len(b_shape)) + tuple(b_shape)
    a_fields = [align(f, n) for f in a_fields]
    b_fields = [align(f, n) for f in b_fields]
    ka, kb = n - 1, n - 2
    batch = set(range(n - 2))
    where = ctx.where()
    # a field that varies along the summed axis *and* the free axis of its operand mixes positions into
    # channels (e.g. after im2col); it names no channel of the summed axis: block it, do not tie it.
    mixed = [f for f in a_fields if ka in support(f) and n - 2 in support(f)]
    mixed += [f for f in b_fields if kb in support(f) and n - 1 in support(f)]
    for f in mixed:
        ctx.space.block(f, f"labels mixed across the summed and free axes of {where}")
    a_fields = [f for f in a_fields if not any(f is m for m in mixed)]
    b_fields = [f for f in b_fields if not any(f is m for m in mixed)]
    a_k = [f for f in a_fields if ka in support(f)]
    b_k = [f for f in b_fields if kb in support(f)]
    if a_k and not b_k and b_shape[kb] > 1:
        for f in a_k:
            ctx.space.block(f, f"contracted with an unlabelled operand in {where}")
    if b_k and not a_k and a_shape[ka] > 1:
        for f in b_k:
            ctx.space.block(f, f"contracted with an unlabelled operand in {where}")
    # tie the labels that meet on the summed axis: a[..., i, k] ~ b[..., k, j] for all i, j
    reps_a = []
    for f in a_k:
        g = expand_dims(f, a_shape, support(f))
        rep = g.narrow(n - 2, 0, 1)
        ctx.space.union(*torch.broadcast_tensors(g, rep))
        reps_a.append(rep)
    reps_b = []
    for f in b_k:
        g = expand_dims(f, b_shape, support(f))
        rep = g.narrow(n - 1, 0, 1)
        ctx.space.union(*torch.broadcast_tensors(g, rep))
        reps_b.append(rep.transpose(n - 2, n - 1))
    for ra in reps_a:
        for rb in reps_b:
            ctx.space.union(*torch.broadcast_tensors(ra, rb))
    _block_unpaired(ctx, reps_a, reps_b, where)
    # pair batch indices: everything a batch index holds on one side goes with what it holds on the other
    side_coarse = []
    for fields, shape in ((a_fields, a_shape), (b_fields, b_shape)):
        on_batch = [f for f in fields if support(f) & batch]
        if on_batch:
            joint = [_coarse_over(ctx, f, shape, {n - 2, n - 1}) for f in on_batch]
            joint = [j for j in joint if j is not None]
            for j in joint[1:]:
                ctx.space.union(*torch.broadcast_tensors(joint[0], j))
            if joint:
                side_coarse.append(joint[0])
    if len(side_coarse) == 2:
        ctx.space.union(*torch.broadcast_tensors(*side_coarse))
    if side_coarse:
        note_heads(ctx, side_coarse[0], sorted(batch))
    out = reduce_fields(ctx, a_fields, a_shape, {ka}) + reduce_fields(ctx, b_fields, b_shape, {kb})
    return compress_all([align(f, n) for f in out])


@register_rule("mm", "bmm", "matmul")
def mm_rule(ctx, func, args, kwargs, outs):
    a, b = args[0], args[1]
    return [contract(ctx, ctx.fields(a), a.shape, ctx.fields(b), b.shape, tuple(outs[0].shape))]


@register_rule("addmm", "baddbmm")
def addmm_rule(ctx, func, args, kwargs, outs):
    bias, a, b = args[0], args[1], args[2]
    fields = contract(ctx, ctx.fields(a), a.shape, ctx.fields(b), b.shape, tuple(outs[0].shape))
    return [union_broadcast(ctx, [(fields, tuple(outs[0].shape)), (ctx.fields(bias), tuple(bias.shape))],
                            tuple(outs[0].shape))]


@register_rule("convolution", "_convolution", "conv2d", "conv1d", "conv3d", "cudnn_convolution",
               "mkldnn_convolution", "_slow_conv2d_forward", "conv_transpose2d", "conv_transpose1d")
def conv_rule(ctx, func, args, kwargs, outs):
    """Convolution: input channels meet the weight's input axis; groups and depthwise handled exactly."""
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    transposed = bool(args[6]) if len(args) > 6 else False
    groups = int(args[8]) if len(args) > 8 else 1
    out = outs[0]
    where = ctx.where()
    nd = x.dim()
    xf = [align(f, nd) for f in ctx.fields(x)]
    wf = ctx.fields(w)
    for f in xf:
        bad = support(f) - {1}
        if bad:
            ctx.space.block(f, f"spatial/batch axis {sorted(bad)} consumed by a convolution in {where}")
    for f in wf:
        if support(f) - {0, 1}:
            ctx.space.block(f, f"kernel axis of a convolution weight in {where}")
    x_ch = [_axis_labels(f, 1, x.shape[1]) for f in xf if 1 in support(f)]
    in_axis, out_axis = (0, 1) if transposed else (1, 0)
    w_in = [_axis_labels(f, in_axis, w.shape[in_axis]) for f in wf if in_axis in support(f)]
    w_out = [_axis_labels(f, out_axis, w.shape[out_axis]) for f in wf if out_axis in support(f)]
    cin = x.shape[1]
    if not x_ch:
        for f in w_in:
            ctx.space.block(f, f"input channels of {where} carry no labels (a model input or a computed tensor)")
    if transposed:
        if groups != 1:
            for f in xf + wf:
                ctx.space.block(f, f"grouped transposed convolution in {where} is not supported")
            return [[]]
        for xv in x_ch:
            for wv in w_in:
                ctx.space.union(xv, wv)
        out_fields = [v.reshape((1, -1) + (1,) * (nd - 2)) for v in w_out]
    else:
        cin_g = w.shape[1]
        cout = w.shape[0]
        cout_g = cout // groups
        cover = torch.stack([xv != 0 for xv in x_ch]).any(0) if x_ch else None
        if groups > 1 and cin_g == 1:
            # depthwise: input channel c feeds outputs c*m .. c*m+m-1
            for xv in x_ch:
                for wv in w_out:
                    ctx.space.union(xv.repeat_interleave(cout_g), wv)
            if cover is not None and not bool(cover.all()):
                for wv in w_out:
                    ctx.space.block(wv[~cover.repeat_interleave(cout_g)], f"unlabelled input channels of {where}")
        else:
            for xv in x_ch:
                for wv in w_in:
                    ctx.space.union(xv, wv.repeat(cin // cin_g))
            if cover is not None and not bool(cover.all()):
                for wv in w_in:
                    ctx.space.block(wv.repeat(cin // cin_g)[~cover], f"unlabelled input channels of {where}")
            if groups > 1:
                # keep every group the same size: channel j of each group goes together
                for wv in w_out:
                    grid = wv.reshape(groups, cout_g)
                    ctx.space.union(grid, grid[:1].expand_as(grid))
        out_fields = [v.reshape((1, -1) + (1,) * (nd - 2)) for v in w_out]
    if bias is not None:
        bf = [f.reshape((1, -1) + (1,) * (nd - 2)) for f in ctx.fields(bias)]
        out_fields = union_broadcast(ctx, [(out_fields, (1, out.shape[1]) + (1,) * (nd - 2)),
                                           (bf, (1, bias.shape[0]) + (1,) * (nd - 2))], tuple(out.shape))
    return [compress_all(out_fields)]


def _axis_labels(f: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """The labels along dimension ``dim`` of a field (first index of every other dimension), length ``size``."""
    g = f
    for d in range(f.dim()):
        if d != dim:
            g = g.narrow(d, 0, 1)
    return g.reshape(-1).expand(size).contiguous()


@register_rule("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
               "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
               "scaled_dot_product_attention", "_scaled_dot_product_attention_math")
def sdpa_rule(ctx, func, args, kwargs, outs):
    """Fused attention ``softmax(q k^T + mask) v``, traced as its two products."""
    q, k, v = args[0], args[1], args[2]
    mask = kwargs.get("attn_mask")
    if mask is None and func.overloadpacket.__name__ == "_scaled_dot_product_efficient_attention" and len(args) > 3:
        mask = args[3]
    kt_fields = [f.transpose(-2, -1) for f in ctx.fields(k)]
    kt_shape = tuple(k.shape[:-2]) + (k.shape[-1], k.shape[-2])
    s_shape = tuple(q.shape[:-1]) + (k.shape[-2],)
    scores = contract(ctx, ctx.fields(q), q.shape, kt_fields, kt_shape, s_shape)
    if isinstance(mask, torch.Tensor) and mask.dtype != torch.bool:
        scores = union_broadcast(ctx, [(scores, s_shape), (ctx.fields(mask), tuple(mask.shape))], s_shape)
    out = contract(ctx, scores, s_shape, ctx.fields(v), v.shape, tuple(outs[0].shape))
    return [out] + [[] for _ in outs[1:]]


@register_rule("embedding")
def embedding_rule(ctx, func, args, kwargs, outs):
    """Embedding tables: the feature axis moves to the output; the vocabulary axis is not prunable."""
    w = args[0]
    res = []
    for f in ctx.fields(w):
        if 0 in support(f):
            ctx.space.block(f, f"embedding vocabulary axis in {ctx.where()}")
        if 1 in support(f):
            res.append(f[:1].reshape((1,) * (outs[0].dim() - 1) + (-1,)))
    return [compress_all(res)]
