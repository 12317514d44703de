"""Data-movement operators: the same movement is applied to the label fields, so offsets come out exact."""
from __future__ import annotations

import weakref
from typing import Any

import torch

from cpd.graph.fields import align, compress, compress_all, expand_dims, merge_disjoint, reshape_field, support
from cpd.graph.rules.registry import register_rule


def _norm(d: int, n: int) -> int:
    return d + n if d < 0 else d


@register_rule("view", "_unsafe_view", "reshape", "view_copy", "_reshape_alias", "squeeze", "unsqueeze",
               "flatten", "unflatten", "view_as")
def reshape_rule(ctx, func, args, kwargs, outs):
    """Reshapes: merge or split dimensions; a split of labelled channels into a grid is recorded."""
    x, out = args[0], outs[0]
    res = []
    for f in ctx.fields(x):
        g, grids = reshape_field(f, tuple(x.shape), tuple(out.shape))
        for grid in grids:
            ctx.space.add_grid(grid)
        res.append(g)
    res = compress_all(res)
    name = func.overloadpacket.__name__
    sizes = args[1] if name in ("view", "reshape") and len(args) > 1 else None
    if isinstance(sizes, (list, tuple)) and len(sizes) == out.dim():
        for d, literal in enumerate(sizes):
            if not isinstance(literal, int) or literal != out.shape[d]:
                continue
            if literal in sizes[d + 1:]:
                # the same number spelled twice: ``reshape(B, N, 3, num_heads, -1)`` with 3 heads.  Only the
                # last one is tied to the attribute (the layout every qkv split of mmseg / mmpretrain uses); a
                # wrong guess breaks the cut, which the cut verification finds
                continue
            for f in res:
                if d in support(f):
                    labels = _axis_labels_of(f, d)
                    for axis in ctx.size_attr_axes(literal):
                        ctx.space.union(axis, labels)
    return [res]


def _axis_labels_of(f: torch.Tensor, d: int) -> torch.Tensor:
    g = f
    for k in range(f.dim()):
        if k != d:
            g = g.narrow(k, 0, 1)
    return g.reshape(-1)


@register_rule("permute")
def permute_rule(ctx, func, args, kwargs, outs):
    dims = [_norm(d, args[0].dim()) for d in args[1]]
    return [[f.permute(dims) for f in ctx.fields(args[0])]]


@register_rule("transpose", "swapaxes", "swapdims")
def transpose_rule(ctx, func, args, kwargs, outs):
    n = args[0].dim()
    return [[f.transpose(_norm(args[1], n), _norm(args[2], n)) for f in ctx.fields(args[0])]]


@register_rule("t", "numpy_T")
def t_rule(ctx, func, args, kwargs, outs):
    return [[f.t() if f.dim() == 2 else f for f in ctx.fields(args[0])]]


@register_rule("expand", "broadcast_to", "expand_as")
def expand_rule(ctx, func, args, kwargs, outs):
    return [[align(f, outs[0].dim()) for f in ctx.fields(args[0])]]


@register_rule("select")
def select_rule(ctx, func, args, kwargs, outs):
    x, dim, index = args[0], _norm(args[1], args[0].dim()), args[2]
    res = [f.select(dim, index if f.shape[dim] > 1 else 0) for f in ctx.fields(x)]
    return [compress_all(res)]


@register_rule("slice")
def slice_rule(ctx, func, args, kwargs, outs):
    x = args[0]
    dim = _norm(args[1] if len(args) > 1 else kwargs.get("dim", 0), x.dim())
    start = args[2] if len(args) > 2 else kwargs.get("start")
    end = args[3] if len(args) > 3 else kwargs.get("end")
    step = args[4] if len(args) > 4 else kwargs.get("step", 1)
    res = []
    n = x.shape[dim]
    half = _half_of(n, start, end, step)
    for k, f in enumerate(ctx.fields(x)):
        if f.shape[dim] == 1:
            res.append(f)
        else:
            idx = [slice(None)] * f.dim()
            idx[dim] = slice(start, end, step)
            res.append(f[tuple(idx)])
            if half is not None:
                _tie_halves(ctx, x, (dim, k), half, res[-1])
    return [compress_all(res)]


def _half_of(n: int, start: Any, end: Any, step: Any) -> int | None:
    """0 or 1 when ``[start:end:step]`` is the first or second half of an axis of even size ``n``, else None."""
    if step not in (None, 1) or n < 2 or n % 2:
        return None
    start = 0 if start is None else start
    end = n if end is None or end > n else end
    return 0 if (start, end) == (0, n // 2) else 1 if (start, end) == (n // 2, n) else None


def _tie_halves(ctx, x: torch.Tensor, key: tuple[int, int], half: int, piece: torch.Tensor) -> None:
    """Channel j of a tensor's first half goes with channel j of its second half once both halves are taken.

    ``x[:, :x.shape[1] // 2], x[:, x.shape[1] // 2:]`` (CSPNet's split) is ``chunk(2)`` spelled with slices: the
    bound follows the width, so both halves must lose the same channels' partners, as for a chunk.  A bound
    spelled literally breaks on any cut either way, which the cut verification finds.
    """
    ref, seen = ctx.tracer.halves.get((id(x),) + key, (None, {}))
    if ref is None or ref() is not x:  # a new tensor (ids of freed tensors are reused)
        ref, seen = weakref.ref(x), {}
    seen[half] = piece
    ctx.tracer.halves[(id(x),) + key] = (ref, seen)
    if len(seen) == 2 and seen[0].shape == seen[1].shape:
        ctx.space.union(seen[0], seen[1])


@register_rule("split", "split_with_sizes", "unbind", "chunk", "tensor_split", "unsafe_split",
               "unsafe_split_with_sizes", "unsafe_chunk")
def split_rule(ctx, func, args, kwargs, outs):
    """Splits: every piece takes its slice of the labels (compressed fields are shared)."""
    x = args[0]
    name = func.overloadpacket.__name__
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    if name == "unbind":
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    dim = _norm(dim, x.dim())
    res: list[list[torch.Tensor]] = [[] for _ in outs]
    for f in ctx.fields(x):
        if f.shape[dim] == 1:
            for i, o in enumerate(outs):
                res[i].append(f.squeeze(dim) if name == "unbind" else f)
            continue
        offset = 0
        pieces = []
        for i, o in enumerate(outs):
            size = 1 if name == "unbind" else o.shape[dim]
            piece = f.narrow(dim, offset, size)
            pieces.append(piece)
            res[i].append(piece.squeeze(dim) if name == "unbind" else piece)
            offset += size
        if name in EQUAL_SPLITS and len({p.shape[dim] for p in pieces}) == 1:
            # chunk(n) / split(size): the pieces must stay equal, so channel j of every piece goes together
            for p in pieces[1:]:
                ctx.space.union(p, pieces[0])
    return [compress_all(r) for r in res]


EQUAL_SPLITS = ("split", "chunk", "unsafe_split", "unsafe_chunk")


def _cat(ctx, tensors, dim: int, out) -> list[torch.Tensor]:
    """Concatenation: fields that vary along ``dim`` are placed at their offsets; fields that do not describe
    the other dims, and the pieces share them (column ``c`` of the result is removed for every piece)."""
    from cpd.graph.rules.pointwise import union_broadcast

    n = out.dim()
    pieces = [t for t in tensors if not (t.dim() == 1 and t.numel() == 0)]
    per = [(t, [align(f, n) for f in ctx.fields(t)]) for t in pieces]
    across_ops = []
    for t, fs in per:
        shape = list(t.shape)
        shape[dim] = 1
        across_ops.append(([f for f in fs if dim not in support(f)], tuple(shape)))
    flat_shape = list(out.shape)
    flat_shape[dim] = 1
    across = union_broadcast(ctx, across_ops, tuple(flat_shape))
    along = []
    offset = 0
    for t, fs in per:
        for f in fs:
            if dim not in support(f):
                continue
            shape = list(out.shape)
            shape[dim] = t.shape[dim]
            g = expand_dims(f, shape, {dim})
            full_shape = list(g.shape)
            full_shape[dim] = out.shape[dim]
            z = torch.zeros(full_shape, dtype=g.dtype)
            z.narrow(dim, offset, t.shape[dim]).copy_(g)
            along.append(z)
        offset += t.shape[dim]
    return compress_all(across + merge_disjoint(along))


@register_rule("cat", "concat", "concatenate")
def cat_rule(ctx, func, args, kwargs, outs):
    tensors = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    return [_cat(ctx, tensors, _norm(dim, outs[0].dim()), outs[0])]


@register_rule("stack")
def stack_rule(ctx, func, args, kwargs, outs):
    """Stacking is a concatenation along a new dimension."""
    tensors = args[0]
    dim = _norm(args[1] if len(args) > 1 else kwargs.get("dim", 0), outs[0].dim())

    class _Unsq:
        def __init__(self, t):
            self.t = t
            self.shape = t.unsqueeze(dim).shape

        def dim(self):
            return len(self.shape)

        @property
        def numel(self):
            return self.t.numel

    saved = ctx.fields
    ctx.fields = lambda x, _s=saved: [f.unsqueeze(dim) for f in _s(x.t)] if isinstance(x, _Unsq) else _s(x)
    try:
        return [_cat(ctx, [_Unsq(t) for t in tensors], dim, outs[0])]
    finally:
        ctx.fields = saved


def apply_to_fields(ctx, func, args, kwargs, outs, replace_value: bool = False):
    """Run the operator itself on fully materialised fields (in float64: exact for labels < 2**53)."""
    x = args[0]
    res = []
    for f in ctx.fields(x):
        g = expand_dims(f, tuple(x.shape)).to(torch.float64)
        rest = list(args[1:])
        if replace_value and len(rest) >= 2:
            rest[1] = 0.0
        out = func(g, *rest, **kwargs)
        if isinstance(out, (tuple, list)):
            out = out[0]
        c = compress(out.round().to(torch.int64))
        if c is not None:
            res.append(c)
    return [res] + [[] for _ in outs[1:]]


@register_rule("index_select", "gather", "roll", "flip", "repeat", "im2col", "col2im", "pixel_shuffle",
               "pixel_unshuffle", "unfold", "narrow", "movedim", "moveaxis", "tile", "diagonal", "tril", "triu",
               "channel_shuffle", "native_channel_shuffle", "reflection_pad1d", "reflection_pad2d",
               "replication_pad1d", "replication_pad2d", "take_along_dim", "_unsafe_index", "repeat_interleave")
def movement_rule(ctx, func, args, kwargs, outs):
    """Generic data movement: apply the operator to the labels themselves."""
    return apply_to_fields(ctx, func, args, kwargs, outs)


@register_rule("constant_pad_nd")
def pad_rule(ctx, func, args, kwargs, outs):
    """Padding: padded elements belong to the channel they pad, so fields constant there are kept as is."""
    x, pad = args[0], list(args[1])
    padded = {x.dim() - 1 - i // 2 for i in range(len(pad)) if pad[i] != 0}
    keep = [f for f in ctx.fields(x) if not (support(f) & padded)]
    moved = apply_to_fields(ctx, func, args, {}, outs, replace_value=True)[0] if len(keep) < len(
        ctx.fields(x)) else []
    moved = [f for f in moved if not any(torch.equal(f, k) for k in keep if f.shape == k.shape)]
    return [compress_all(keep + moved)]


@register_rule("index")
def index_rule(ctx, func, args, kwargs, outs):
    """Advanced indexing ``x[idx]``: index tensors carry no channel labels of their own."""
    x, indices = args[0], args[1]
    res = []
    for f in ctx.fields(x):
        g = expand_dims(f, tuple(x.shape))
        c = compress(torch.ops.aten.index.Tensor(g, list(indices)))
        if c is not None:
            res.append(c)
    return [res]
