"""DigitMosaicDataset loads a written layout through mmseg's registry and a standard pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmcv")
pytest.importorskip("sklearn")
pytest.importorskip("PIL")

pytestmark = pytest.mark.mm

PIPELINE = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]


def _dataset_cfg(root: Path, split: str) -> dict[str, object]:
    return dict(
        type="DigitMosaicDataset",
        data_root=str(root),
        data_prefix=dict(img_path=f"img_dir/{split}", seg_map_path=f"ann_dir/{split}"),
        pipeline=PIPELINE,
    )


def test_dataset_reads_written_layout(tmp_path: Path) -> None:
    import cpd.mm.digits  # noqa: F401  (registers DigitMosaicDataset)
    from cpd.data.digit_mosaic import CLASSES, make_scenes, write_mmseg_layout
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS

    root = write_mmseg_layout(tmp_path / "mosaic", n_train=8, n_val=4, seed=2)
    with DefaultScope.overwrite_default_scope("mmseg"):
        train = DATASETS.build(_dataset_cfg(root, "train"))
        val = DATASETS.build(_dataset_cfg(root, "val"))
        sample = val[3]
    assert len(train) == 8 and len(val) == 4
    assert val.metainfo["classes"] == CLASSES
    assert len(val.metainfo["palette"]) == len(CLASSES)
    assert val.reduce_zero_label is False

    images, labels = make_scenes(4, "val", 2)
    assert Path(sample["data_samples"].img_path).name == "00003.png"
    gt = sample["data_samples"].gt_sem_seg.data.numpy()
    assert gt.shape == (1, 64, 64)
    assert np.array_equal(gt[0], labels[3])
    # LoadImageFromFile decodes to BGR; PackSegInputs puts channels first.
    assert np.array_equal(sample["inputs"].numpy().transpose(1, 2, 0), images[3][..., ::-1])
