"""Decode heads of the embedded default model, registered in mmseg's ``MODELS``.

Configs reach them with ``custom_imports = dict(imports=['cpd.mm.heads'])``.
"""

from __future__ import annotations

from cpd.mm.shim import install_mmcv_shim

install_mmcv_shim()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmseg.models.decode_heads.decode_head import BaseDecodeHead  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from torch import nn  # noqa: E402


@MODELS.register_module()
class PixelShuffleHead(BaseDecodeHead):
    """A linear per-patch classifier that predicts every pixel of its patch.

    One 1x1 convolution maps each feature vector of a ``(N, C, h, w)`` map to ``classes * s * s``
    logits, and ``pixel_shuffle(s)`` lays them out as an ``s x s`` block of pixels, giving
    ``(N, classes, h * s, w * s)``. On a ViT with patch size ``s`` this is the usual linear
    segmentation head, at full resolution: a classifier of one logit per patch followed by
    bilinear upsampling cannot draw digit strokes a few pixels wide inside an 8x8 patch.

    ``conv_seg`` stays the output layer (its output channels are classes times positions and are
    never pruned), so :func:`cpd.mm.output_modules` finds it as for any mmseg head.

    Args:
        scale: the upsampling factor ``s``, normally the backbone's patch size.
        **kwargs: passed on to ``BaseDecodeHead``; ``channels`` must equal ``in_channels`` (there
            is no layer between the input and ``conv_seg``) and one input is used (``in_index``).

    Raises:
        ValueError: ``scale`` is not a positive integer, or ``channels != in_channels``, or the
            head is configured to take several inputs.
    """

    def __init__(self, scale: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if self.input_transform is not None:
            raise ValueError(f"PixelShuffleHead takes one input; got input_transform={self.input_transform!r}")
        if self.channels != self.in_channels:
            raise ValueError(
                f"PixelShuffleHead has no layer before conv_seg, so channels ({self.channels}) "
                f"must equal in_channels ({self.in_channels})"
            )
        self.scale = scale
        self.conv_seg = nn.Conv2d(self.channels, self.out_channels * scale * scale, kernel_size=1)

    def forward(self, inputs: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Classify every pixel of every patch.

        Args:
            inputs: the backbone's (or neck's) outputs; ``in_index`` picks the one used.

        Returns:
            Logits ``(N, out_channels, h * scale, w * scale)``.
        """
        return F.pixel_shuffle(self.cls_seg(self._transform_inputs(inputs)), self.scale)
