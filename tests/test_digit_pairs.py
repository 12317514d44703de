"""Digit-pair scenes: determinism, labels from the digits shown, mmpretrain folder layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cpd.data import digit_mosaic as dm
from cpd.data import digit_pairs as ds

pytest.importorskip("sklearn")


def test_scenes_are_deterministic_and_labelled_by_the_larger_digit() -> None:
    images, labels, digits = ds.make_scenes(200, "train", 3)
    assert images.shape == (200, 32, 32, 3) and images.dtype == np.uint8
    again = ds.make_scenes(200, "train", 3)
    assert all(np.array_equal(a, b) for a, b in zip((images, labels, digits), again))
    assert not np.array_equal(images, ds.make_scenes(200, "train", 4)[0])
    assert ((digits >= 0).sum(axis=1) == ds.DIGITS_PER_SCENE).all()
    assert np.array_equal(labels, [max(d for d in row if d >= 0) for row in digits.tolist()])
    assert set(labels.tolist()) >= set(range(1, 10))  # every class but 0 (1 scene in 100) occurs in 200


def test_a_digit_is_drawn_in_its_cell_and_only_there() -> None:
    images, _, digits = ds.make_scenes(64, "val", 0)
    gray = images.astype(np.float32).mean(axis=3) / 255.0
    cells = gray.reshape(64, ds.GRID, ds.CELL, ds.GRID, ds.CELL).transpose(0, 1, 3, 2, 4).reshape(64, 4, -1)
    peak = cells.max(axis=2)
    # a digit peaks at its contrast (>= 0.6) over a background below 0.35 even with noise; empty cells stay dim
    assert (peak[digits >= 0] > 0.55).all()
    assert (np.sort(cells[digits < 0], axis=1)[:, -10] < 0.55).all()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    for kwargs, match in [(dict(n=0, split="train", seed=0), "n must be"),
                          (dict(n=2, split="test", seed=0), "split"),
                          (dict(n=2, split="train", seed=-1), "seed")]:
        with pytest.raises(ValueError, match=match):
            ds.make_scenes(**kwargs)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a digit-pair layout"):
        ds.write_mmpretrain_layout(tmp_path / "other", 4, 2, 0)


def test_the_layout_is_mmpretrains_custom_dataset(tmp_path: Path) -> None:
    pytest.importorskip("mmpretrain")
    import cpd.mm  # noqa: F401  (the stand-ins mmpretrain's datasets need here)
    from mmpretrain.datasets import CustomDataset

    root = ds.write_mmpretrain_layout(tmp_path / "sums", 40, 12, 1)
    meta = json.loads((root / "meta.json").read_text())
    _, labels, _ = ds.make_scenes(40, "train", 1)
    assert meta["class_counts"]["train"] == np.bincount(labels, minlength=10).tolist()
    before = (root / "meta.json").stat().st_mtime_ns
    assert ds.write_mmpretrain_layout(root, 40, 12, 1) == root and (root / "meta.json").stat().st_mtime_ns == before
    dataset = CustomDataset(data_root=str(root), data_prefix="train", pipeline=[])
    assert len(dataset) == 40 and dataset.metainfo["classes"] == ds.CLASSES
    got = sorted((Path(dataset.get_data_info(i)["img_path"]).name, dataset.get_data_info(i)["gt_label"])
                 for i in range(len(dataset)))
    assert [int(k) for _, k in got] == labels.tolist()
    ds.write_mmpretrain_layout(root, 20, 12, 1)  # other arguments replace the layout
    assert len(CustomDataset(data_root=str(root), data_prefix="train", pipeline=[])) == 20
