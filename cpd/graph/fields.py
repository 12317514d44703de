"""Label fields: broadcastable integer tensors saying which channel each element of a traced tensor belongs to.

A field has the same number of dimensions as its tensor; along every dimension it either has the tensor's
size or size 1 (constant along that dimension).  Keeping fields compressed this way makes tracing a large
segmentation model cost little more than its shapes.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

Field = torch.Tensor


def support(f: Field) -> set[int]:
    """Dimensions along which the field varies (size > 1)."""
    return {d for d, s in enumerate(f.shape) if s > 1}


def align(f: Field, ndim: int) -> Field:
    """Prepend size-1 dimensions so that ``f`` has ``ndim`` dimensions (numpy broadcasting rules)."""
    while f.dim() < ndim:
        f = f.unsqueeze(0)
    return f


def expand_dims(f: Field, shape: Sequence[int], dims: set[int] | None = None) -> Field:
    """Materialise ``f`` at full size along ``dims`` (all dimensions when None)."""
    target = [shape[d] if (dims is None or d in dims) else f.shape[d] for d in range(len(shape))]
    if list(f.shape) == target:
        return f
    return f.expand(target).contiguous()


def compress(f: Field) -> Field | None:
    """Shrink every dimension along which ``f`` is constant to size 1; None when ``f`` holds no label."""
    if f.numel() == 0 or not bool((f != 0).any()):
        return None
    for d in range(f.dim()):
        if f.shape[d] > 1 and bool((f == f.narrow(d, 0, 1)).all()):
            f = f.narrow(d, 0, 1)
    return f.contiguous()


def compress_all(fields: Sequence[Field]) -> list[Field]:
    """Compress several fields, dropping empty ones and exact duplicates."""
    out: list[Field] = []
    for f in fields:
        c = compress(f)
        if c is None:
            continue
        if any(o.shape == c.shape and torch.equal(o, c) for o in out):
            continue
        out.append(c)
    return out


def merge_disjoint(fields: list[Field]) -> list[Field]:
    """Merge fields of identical shape whose labelled elements do not overlap (e.g. after a concat)."""
    merged: list[Field] = []
    for f in fields:
        for i, m in enumerate(merged):
            if m.shape == f.shape and not bool(((m != 0) & (f != 0)).any()):
                merged[i] = m + f
                break
        else:
            merged.append(f)
    return merged


def reshape_groups(a: Sequence[int], b: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """Pair the dimensions of shape ``a`` with those of shape ``b`` that a reshape merges or splits.

    Returns:
        A list of ``(dims of a, dims of b)`` whose sizes have equal products.
    """
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        ia: list[int] = []
        jb: list[int] = []
        pa = pb = 1
        if i < len(a):
            pa *= a[i]
            ia.append(i)
            i += 1
        if j < len(b):
            pb *= b[j]
            jb.append(j)
            j += 1
        while pa != pb:
            if pa < pb and i < len(a):
                pa *= a[i]
                ia.append(i)
                i += 1
            elif j < len(b):
                pb *= b[j]
                jb.append(j)
                j += 1
            else:
                raise ValueError(f"cannot reshape {tuple(a)} into {tuple(b)}")
        # absorb trailing size-1 dimensions into this group
        while i < len(a) and a[i] == 1 and (j >= len(b) or b[j] != 1):
            ia.append(i)
            i += 1
        groups.append((ia, jb))
    return groups


def reshape_field(f: Field, in_shape: Sequence[int], out_shape: Sequence[int]) -> tuple[Field, list[Field]]:
    """Apply a reshape from ``in_shape`` to ``out_shape`` to a field.

    Returns:
        The reshaped field, and the *grids*: for every input dimension whose labels the reshape splits over
        several output dimensions, the labels laid out along those dimensions.
    """
    groups = reshape_groups(list(in_shape), list(out_shape))
    sup = support(f)
    full = set()
    for ia, _ in groups:
        if sup & set(ia):
            full.update(ia)
    g = expand_dims(f, in_shape, full)
    target = []
    for ia, jb in groups:
        live = bool(set(ia) & full)
        target.extend(out_shape[j] if live else 1 for j in jb)
    g = g.reshape(target)
    grids = []
    for ia, jb in groups:
        if not (set(ia) & full) or len(jb) < 2:
            continue
        varying = [j for j in jb if g.shape[j] > 1 and not bool((g == g.narrow(j, 0, 1)).all())]
        if len(varying) >= 2:
            index = [slice(None) if j in varying else 0 for j in range(g.dim())]
            grids.append(g[tuple(index)])
    return g, grids
