"""The digit mosaic dataset (:mod:`cpd.data.digit_mosaic`) as an mmsegmentation dataset.

Importing this module registers ``DigitMosaicDataset`` in mmseg's ``DATASETS``; configs reach it with
``custom_imports = dict(imports=['cpd.mm.digits'])`` and ``dataset = dict(type='DigitMosaicDataset',
data_root=..., data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'), ...)``.
The files are written by :func:`cpd.data.digit_mosaic.write_mmseg_layout`.
"""

from __future__ import annotations

from cpd.mm.shim import install_mmcv_shim

install_mmcv_shim()

from mmseg.datasets import BaseSegDataset  # noqa: E402
from mmseg.registry import DATASETS  # noqa: E402

from cpd.data.digit_mosaic import CLASSES, PALETTE  # noqa: E402


@DATASETS.register_module()
class DigitMosaicDataset(BaseSegDataset):
    """Digit mosaic scenes: 11 classes, ``background`` (label 0) and the digits ``0``..``9`` (labels 1..10).

    Images and label maps are both ``.png``; label 0 is a real class, so zero labels are not reduced.

    Args:
        img_suffix: suffix of image files.
        seg_map_suffix: suffix of label map files.
        reduce_zero_label: whether to map label 0 to the ignore index (keep False for this dataset).
        **kwargs: passed on to ``BaseSegDataset`` (``data_root``, ``data_prefix``, ``pipeline``, ...).
    """

    METAINFO = dict(classes=CLASSES, palette=[list(color) for color in PALETTE])

    def __init__(
        self,
        img_suffix: str = ".png",
        seg_map_suffix: str = ".png",
        reduce_zero_label: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(
            img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=reduce_zero_label, **kwargs
        )
