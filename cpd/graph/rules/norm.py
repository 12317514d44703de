"""Normalisations, reductions and spatial operators (resizing, pooling)."""
from __future__ import annotations

import torch

from cpd.graph.fields import align, compress_all, support
from cpd.graph.rules.registry import register_rule
from cpd.graph.rules.contract import _axis_labels, reduce_fields
from cpd.graph.rules.pointwise import union_broadcast


def _stats_outputs(fields, outs):
    return [fields] + [[] for _ in outs[1:]]


@register_rule("native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm")
def layer_norm_rule(ctx, func, args, kwargs, outs):
    """LayerNorm over the trailing dims: the affine parameters (or the module's ``normalized_shape``) follow."""
    x, shape = args[0], list(args[1])
    w = args[2] if len(args) > 2 else None
    b = args[3] if len(args) > 3 and func.overloadpacket.__name__ != "rms_norm" else None
    n = x.dim()
    norm_dims = set(range(n - len(shape), n))
    xf = [align(f, n) for f in ctx.fields(x)]
    for f in xf:
        if support(f) & norm_dims:
            ctx.space.note_normalized(f)
    params = [p for p in (w, b) if isinstance(p, torch.Tensor)]
    operands = [(xf, tuple(x.shape))] + [(ctx.fields(p), tuple(p.shape)) for p in params]
    if not params and len(shape) == 1 and shape[0] > 1:
        axis = ctx.attr_axis("normalized_shape", shape[0])
        if axis is None:
            for f in xf:
                if support(f) & norm_dims:
                    ctx.space.block(f, f"functional layer_norm over labelled channels in {ctx.where()}")
        else:
            operands.append(([axis], (shape[0],)))
    fields = union_broadcast(ctx, operands, tuple(x.shape))
    return _stats_outputs(fields, outs)


@register_rule("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
               "_native_batch_norm_legit_functional", "batch_norm", "instance_norm", "_batch_norm_impl_index",
               "cudnn_batch_norm", "miopen_batch_norm", "_batch_norm_with_update", "_batch_norm_no_update")
def batch_norm_rule(ctx, func, args, kwargs, outs):
    """Batch norm: weight, bias and running statistics are per channel (dimension 1)."""
    x = args[0]
    n = x.dim()
    xf = [align(f, n) for f in ctx.fields(x)]
    operands = [(xf, tuple(x.shape))]
    shape = (1, x.shape[1]) + (1,) * (n - 2)
    for p in args[1:5]:
        if isinstance(p, torch.Tensor) and p.dim() == 1 and p.numel() == x.shape[1] and x.shape[1] > 1:
            operands.append(([f.reshape(shape) for f in ctx.fields(p)], shape))
    fields = union_broadcast(ctx, operands, tuple(x.shape))
    return _stats_outputs(fields, outs)


@register_rule("native_group_norm", "group_norm")
def group_norm_rule(ctx, func, args, kwargs, outs):
    """GroupNorm: a group of channels is removed whole (``num_groups`` shrinks), so statistics stay exact."""
    x, w, b = args[0], args[1], args[2]
    groups = int(args[6]) if func.overloadpacket.__name__ == "native_group_norm" else int(args[1])
    n = x.dim()
    c = x.shape[1]
    xf = [align(f, n) for f in ctx.fields(x)]
    shape = (1, c) + (1,) * (n - 2)
    operands = [(xf, tuple(x.shape))]
    for p in (w, b):
        if isinstance(p, torch.Tensor) and p.numel() == c:
            operands.append(([f.reshape(shape) for f in ctx.fields(p)], shape))
    fields = union_broadcast(ctx, operands, tuple(x.shape))
    ch = [_axis_labels(f, 1, c) for f in fields if 1 in support(f)]
    if ch and groups > 1:
        axis = ctx.attr_axis("num_groups", groups)
        if axis is None:
            for v in ch:
                ctx.space.block(v, f"functional group_norm over labelled channels in {ctx.where()}")
        for v in ch:
            per_group = v.reshape(groups, c // groups)
            coarse = torch.tensor([ctx.space.coarse_label(r) for r in per_group], dtype=torch.int64)
            if axis is not None:
                ctx.space.union(axis, coarse)
    if ch and groups not in (1, c):
        pass  # whole groups only: the coarse labels above already bind each group
    elif ch and groups == 1:
        for v in ch:
            ctx.space.note_normalized(v)
    return _stats_outputs(fields, outs)


REDUCTIONS = ("sum mean amax amin max min var std var_mean std_mean logsumexp prod norm linalg_vector_norm "
              "argmax argmin any all nansum nanmean count_nonzero median mode").split()


@register_rule(*REDUCTIONS)
def reduction_rule(ctx, func, args, kwargs, outs):
    """Reductions over some dims: labels summed away vanish, or become coarse where they share a kept dim."""
    x = args[0]
    n = x.dim()
    name = func.overloadpacket.__name__
    dims = None
    keepdim = kwargs.get("keepdim", False)
    rest = list(args[1:])
    if name in ("norm", "linalg_vector_norm") and rest:
        rest = rest[1:]
    if rest and isinstance(rest[0], (list, tuple)):
        dims = [d % n for d in rest[0]] if len(rest[0]) else None
        keepdim = rest[1] if len(rest) > 1 and isinstance(rest[1], bool) else keepdim
    elif rest and isinstance(rest[0], int) and not isinstance(rest[0], bool):
        dims = [rest[0] % n]
        keepdim = rest[1] if len(rest) > 1 and isinstance(rest[1], bool) else keepdim
    elif "dim" in kwargs and kwargs["dim"] is not None:
        d = kwargs["dim"]
        dims = [x % n for x in (d if isinstance(d, (list, tuple)) else [d])]
    if dims is None:
        return [[] for _ in outs]
    xf = [align(f, n) for f in ctx.fields(x)]
    if name in ("mean", "var", "std", "var_mean", "std_mean", "nanmean"):
        for f in xf:
            if support(f) & set(dims):
                ctx.space.note_normalized(f)
    fields = reduce_fields(ctx, xf, tuple(x.shape), set(dims))
    if not keepdim:
        squeezed = []
        for f in fields:
            g = f
            for d in sorted(dims, reverse=True):
                g = g.squeeze(d) if g.dim() > d else g
            squeezed.append(g)
        fields = squeezed
    res = []
    for o in outs:
        res.append(compress_all([f for f in fields if f.dim() == o.dim()]))
    return res


SPATIAL = ("upsample_bilinear2d upsample_nearest2d upsample_bicubic2d _upsample_bilinear2d_aa _upsample_bicubic2d_aa "
           "_upsample_nearest_exact2d upsample_linear1d upsample_nearest1d upsample_trilinear3d upsample_nearest3d "
           "avg_pool2d avg_pool1d avg_pool3d max_pool2d_with_indices max_pool2d max_pool1d max_pool3d_with_indices "
           "adaptive_avg_pool2d _adaptive_avg_pool2d adaptive_avg_pool1d adaptive_max_pool2d adaptive_max_pool1d "
           "_adaptive_avg_pool3d adaptive_avg_pool3d max_unpool2d fractional_max_pool2d lp_pool2d").split()


@register_rule(*SPATIAL)
def spatial_rule(ctx, func, args, kwargs, outs):
    """Resizing and pooling act on the trailing spatial dims; batch and channel labels pass through."""
    x = args[0]
    name = func.overloadpacket.__name__
    k = 3 if "3d" in name else 1 if "1d" in name else 2
    n = x.dim()
    spatial = set(range(n - k, n))
    res = []
    for f in ctx.fields(x):
        f = align(f, n)
        if support(f) & spatial:
            ctx.space.block(f, f"spatial axis resized or pooled in {ctx.where()}")
            continue
        res.append(f)
    return [compress_all([f for f in res if f.dim() == o.dim()]) for o in outs]


@register_rule("new_empty", "new_zeros", "new_ones", "new_full", "new_empty_strided", "empty_strided",
               "scalar_tensor", "arange", "zeros", "ones", "full", "empty", "randn", "rand", "randint")
def creation_rule(ctx, func, args, kwargs, outs):
    """Creation from explicit sizes.  ``x.new_empty(size)`` whose size repeats ``x``'s size along a labelled
    dimension (feature dropout masks: ``(B, C, 1, 1)``) follows ``x`` there; anything else carries no labels."""
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    size = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else None
    if x is None or size is None or len(size) != x.dim() or not outs:
        return [[] for _ in outs]
    same = {d for d in range(x.dim()) if size[d] == x.shape[d]}
    res = []
    for f in ctx.fields(x):
        if support(f) and support(f) <= same:
            res.append(f)
    return [compress_all(res)] + [[] for _ in outs[1:]]


@register_rule("grid_sampler_2d", "grid_sampler", "_local_scalar_dense", "item", "sym_size", "is_nonzero")
def grid_rule(ctx, func, args, kwargs, outs):
    """Grid sampling keeps input channels; other operands' labels (grid positions) are blocked."""
    x = args[0]
    if func.overloadpacket.__name__.startswith("grid"):
        grid = args[1]
        for f in ctx.fields(grid):
            ctx.space.block(f, f"sampling grid in {ctx.where()}")
        res = [f for f in (align(f, x.dim()) for f in ctx.fields(x)) if not (support(f) - {0, 1})]
        return [res] + [[] for _ in outs[1:]]
    return [[] for _ in outs]
