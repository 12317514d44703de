"""Digit boxes: one box per digit drawn, tight around its labelled pixels, in COCO json that mmdet reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cpd.data import digit_boxes as db
from cpd.data import digit_mosaic as dm

pytest.importorskip("sklearn")


def test_every_digit_gets_the_tightest_box_of_its_pixels_and_its_class() -> None:
    images, boxes, classes = db.make_detection_scenes(40, "train", 2)
    _, labels = dm.make_scenes(40, "train", 2)
    sources = dm.scene_sources(40, "train", 2)
    targets = dm._source()[2]
    assert images.shape == (40, 64, 64, 3) and len(boxes) == len(classes) == 40
    for scene, scene_boxes, scene_classes, cells in zip(labels, boxes, classes, sources):
        drawn = [c for c in range(16) if cells[c] >= 0]
        assert len(scene_boxes) == len(drawn)  # every digit of the mosaic has foreground pixels
        assert scene_classes.tolist() == [int(targets[cells[c]]) for c in drawn]
        for (x1, y1, x2, y2), digit, cell in zip(scene_boxes.astype(int), scene_classes, drawn):
            row, col = divmod(cell, 4)
            assert col * 16 <= x1 < x2 <= col * 16 + 16 and row * 16 <= y1 < y2 <= row * 16 + 16
            inside = scene[y1:y2, x1:x2]
            # tight: the label fills the box's border rows and columns, and nothing of it lies outside
            assert (inside == digit + 1).any(axis=1)[[0, -1]].all() and (inside == digit + 1).any(axis=0)[[0, -1]].all()
            cell_labels = scene[row * 16:row * 16 + 16, col * 16:col * 16 + 16]
            assert (cell_labels > 0).sum() == (inside > 0).sum()
    again = db.make_detection_scenes(40, "train", 2)
    assert all(np.array_equal(a, b) for a, b in zip(boxes, again[1]))


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(64, 64\) scene"):
        db.scene_boxes(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="n_train must be"):
        db.write_coco_layout(tmp_path / "x", 0, 2, 0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a digit-box layout"):
        db.write_coco_layout(tmp_path / "other", 4, 2, 0)


def test_the_layout_is_mmdets_coco_dataset(tmp_path: Path) -> None:
    pytest.importorskip("mmdet")
    pytest.importorskip("pycocotools")
    import cpd.mm  # noqa: F401  (the stand-ins mmdet needs here)
    from mmdet.datasets import CocoDataset

    root = db.write_coco_layout(tmp_path / "boxes", 12, 4, 1)
    meta = json.loads((root / "meta.json").read_text())
    _, boxes, classes = db.make_detection_scenes(12, "train", 1)
    assert meta["box_counts"]["train"] == sum(len(b) for b in boxes)
    before = (root / "meta.json").stat().st_mtime_ns
    assert db.write_coco_layout(root, 12, 4, 1) == root and (root / "meta.json").stat().st_mtime_ns == before
    dataset = CocoDataset(data_root=str(root), ann_file="annotations/train.json", data_prefix=dict(img="train/"),
                          metainfo=dict(classes=db.CLASSES), pipeline=[])
    assert len(dataset) == 12
    for i in range(12):
        info = dataset.get_data_info(i)
        k = int(Path(info["img_path"]).stem)
        assert [a["bbox_label"] for a in info["instances"]] == classes[k].tolist()
        np.testing.assert_allclose([a["bbox"] for a in info["instances"]], boxes[k], atol=1e-4)
