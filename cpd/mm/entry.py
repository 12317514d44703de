"""The forward that training uses, as one call a tracer can follow.

``model(inputs)`` of an mmseg segmentor runs only the decode head, so a trace of
it never reaches the auxiliary heads, which training does use. :func:`seg_forward`
runs the backbone (and neck) once and then every decode and auxiliary head, and
returns all their logits. It relies on the segmentor's structure only
(``extract_feat``, ``decode_head``, ``auxiliary_head``); mask classification heads
(MaskFormer, Mask2Former), whose forward reads the input shape from the batch's data
samples, get samples carrying only that shape.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def seg_forward(model: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Run an mmseg ``EncoderDecoder`` or ``CascadeEncoderDecoder`` through all heads.

    In a cascade (``decode_head`` is a ``ModuleList``) the first head takes the
    features and each later head takes ``(features, previous_output)``.

    Args:
        model: the segmentor.
        inputs: a normalised image batch ``(N, C, H, W)``.

    Returns:
        The logits of every decode head (in order), then of every auxiliary head.

    Raises:
        TypeError: ``model`` has no ``extract_feat`` or ``decode_head``, or a head
            returns something other than tensors.
    """
    if not callable(getattr(model, "extract_feat", None)) or _decode_heads(model) is None:
        raise TypeError(
            f"seg_forward needs an mmseg EncoderDecoder-like model with extract_feat and "
            f"decode_head; got {type(model).__name__}"
        )
    feats = model.extract_feat(inputs)
    outputs: list[torch.Tensor] = []
    previous = None
    for index, head in enumerate(_decode_heads(model)):
        if needs_data_samples(head):
            previous = head.forward(feats, shape_samples(inputs))
        else:
            previous = head.forward(feats) if index == 0 else head.forward(feats, previous)
        outputs.extend(_tensors(previous, f"decode_head[{index}]"))
    for index, head in enumerate(_auxiliary_heads(model)):
        outputs.extend(_tensors(head.forward(feats), f"auxiliary_head[{index}]"))
    return outputs


def needs_data_samples(head: nn.Module) -> bool:
    """Whether ``head.forward`` takes the batch's data samples (mask classification heads: MaskFormer,
    Mask2Former, which read the input shape from them)."""
    try:
        return "batch_data_samples" in inspect.signature(head.forward).parameters
    except (TypeError, ValueError):
        return False


def shape_samples(inputs: torch.Tensor) -> list[Any]:
    """One ``SegDataSample`` per image of ``inputs`` carrying only its shape (what a head's forward reads:
    ``img_shape``, ``pad_shape``, ``batch_input_shape``; no ground truth)."""
    from mmseg.structures import SegDataSample

    shape = tuple(inputs.shape[-2:])
    meta = dict(img_shape=shape, pad_shape=shape, batch_input_shape=shape, ori_shape=shape)
    return [SegDataSample(metainfo=meta) for _ in range(inputs.shape[0])]


def output_modules(model: nn.Module) -> list[str]:
    """Name the layers that produce class logits (each head's ``conv_seg``).

    Their output channels are the classes and must never be pruned.

    Args:
        model: the segmentor.

    Returns:
        Module names as in ``model.named_modules()``, decode heads first.
    """
    wanted = {
        id(head.conv_seg)
        for head in _all_heads(model)
        if isinstance(getattr(head, "conv_seg", None), nn.Module)
    }
    return [name for name, module in model.named_modules() if id(module) in wanted]


def _decode_heads(model: nn.Module) -> list[nn.Module] | None:
    head = getattr(model, "decode_head", None)
    if head is None:
        return None
    return list(head) if isinstance(head, nn.ModuleList) else [head]


def _auxiliary_heads(model: nn.Module) -> list[nn.Module]:
    head = getattr(model, "auxiliary_head", None)
    if head is None:
        return []
    return list(head) if isinstance(head, nn.ModuleList) else [head]


def _all_heads(model: nn.Module) -> Iterator[nn.Module]:
    yield from _decode_heads(model) or []
    yield from _auxiliary_heads(model)


def _tensors(output: object, where: str) -> list[torch.Tensor]:
    """Flatten a head's output (a tensor, or a list/tuple of them)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item, where)]
    raise TypeError(f"{where}.forward returned {type(output).__name__}, expected tensors")
