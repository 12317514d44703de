"""Elementwise operators: broadcasting ties the labels of operands that share a dimension."""
from __future__ import annotations

import torch

from cpd.graph.fields import align, compress_all, expand_dims, support
from cpd.graph.rules.registry import register_rule

POINTWISE = (
    "add sub rsub mul div true_divide floor_divide neg abs relu relu6 gelu silu sigmoid tanh hardswish hardsigmoid "
    "hardtanh leaky_relu elu selu celu mish softplus clamp clamp_min clamp_max pow sqrt rsqrt exp log log1p "
    "expm1 erf erfc sin cos reciprocal sign floor ceil round trunc frac remainder fmod where masked_fill "
    "minimum maximum fmax fmin addcmul addcdiv lerp gt lt ge le eq ne logical_and logical_or logical_not "
    "logical_xor bitwise_and bitwise_or bitwise_not isnan isinf isfinite nan_to_num clone alias detach "
    "lift_fresh lift_fresh_copy _to_copy to contiguous fill zero zeros_like ones_like empty_like full_like "
    "rand_like randn_like bernoulli uniform normal copy native_dropout dropout glu_not square xlogy "
    "_softmax _log_softmax softmax log_softmax _safe_softmax cumsum cumprod logit hardshrink softshrink "
    "threshold exponential sigmoid_ tanh_ masked_fill_ _conj resolve_conj resolve_neg positive "
    "type_as view_as_real_not _assert_tensor_metadata"
).split()


def union_broadcast(ctx, operands: list[tuple[list[torch.Tensor], tuple[int, ...]]], out_shape) -> list[torch.Tensor]:
    """Tie the fields of broadcast operands and return the fields of the result.

    Args:
        ctx: the trace context.
        operands: per operand, its fields and its shape.
        out_shape: the broadcast result shape.

    Returns:
        The fields of the result (every operand's fields, duplicates removed).
    """
    n = len(out_shape)
    ops = [([align(f, n) for f in fs], (1,) * (n - len(s)) + tuple(s)) for fs, s in operands]
    for k, (fs, shape) in enumerate(ops):
        for j, (gs, _) in enumerate(ops):
            if j != k:
                for g in gs:
                    block_uncovered(ctx, g, fs, shape, out_shape)
    out: list[tuple[int, torch.Tensor]] = []
    for k, (fs, _) in enumerate(ops):
        for f in fs:
            covered = False
            for j, g in out:
                if j == k:
                    continue  # two fields of one tensor name different axes: never tie them
                if support(f) & support(g):
                    dims = support(f) | support(g)
                    ef, eg = expand_dims(f, out_shape, dims), expand_dims(g, out_shape, dims)
                    ef, eg = torch.broadcast_tensors(ef, eg)
                    ctx.space.union(ef, eg)
                    if support(f) <= support(g) and bool(((ef != 0) <= (eg != 0)).all()):
                        covered = True
            if not covered:
                out.append((k, f))
    return compress_all([f for _, f in out])


def block_uncovered(ctx, g: torch.Tensor, fs: list[torch.Tensor], shape: tuple[int, ...], out_shape) -> None:
    """Block the labels of ``g`` at positions where an operand of ``shape`` (fields ``fs``) has no label.

    Such an element (a model input channel, a tensor created in forward) cannot follow a cut of ``g``.
    """
    sup = support(g)
    if not any(shape[d] > 1 for d in sup):
        return  # the operand broadcasts over g's axes
    cover = None
    for f in fs:
        if support(f) & sup:
            nz = f != 0
            for d in support(f) - sup:
                nz = nz.any(dim=d, keepdim=True)
            nz = expand_dims(nz, out_shape, sup & support(f))
            cover = nz if cover is None else cover | nz
    where = ctx.where()
    if cover is None:
        ctx.space.block(g, f"combined with an unlabelled tensor of shape {list(shape)} in {where}")
        return
    gg, cc = torch.broadcast_tensors(g, cover)
    if not bool(cc.all()):
        ctx.space.block(gg[~cc], f"partly combined with unlabelled elements of a tensor of shape {list(shape)} "
                                 f"in {where}")


@register_rule(*POINTWISE)
def pointwise_rule(ctx, func, args, kwargs, outs):
    """Every tensor argument broadcasts against the others; every output gets the joint fields."""
    tensors = [a for a in ctx.tensor_args(args, kwargs) if a.dim() > 0 or a.numel() > 1]
    out_shape = tuple(outs[0].shape) if outs else ()
    operands = [(ctx.fields(t), tuple(t.shape)) for t in tensors]
    fields = union_broadcast(ctx, operands, out_shape)
    return [[f for f in fields if f.dim() == o.dim()] if o.shape == outs[0].shape else [] for o in outs]


@register_rule("_prelu_kernel", "prelu")
def prelu_rule(ctx, func, args, kwargs, outs):
    """PReLU: the weight is per channel along dimension 1, not the last one."""
    x, w = args[0], args[1]
    wf = [f.reshape((1, -1) + (1,) * (x.dim() - 2)) for f in ctx.fields(w)] if w.numel() > 1 else []
    shape_w = (1, w.numel()) + (1,) * (x.dim() - 2) if w.numel() > 1 else (1,) * x.dim()
    return [union_broadcast(ctx, [(ctx.fields(x), tuple(x.shape)), (wf, shape_w)], tuple(outs[0].shape))]
