"""Digit mosaic generator: determinism, label/image consistency, source split, mmseg layout on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpd.data import digit_mosaic as dm

pytest.importorskip("sklearn")

N = 300  # crosses a chunk boundary (dm.CHUNK == 256)


@pytest.fixture(scope="module")
def train() -> tuple[np.ndarray, np.ndarray]:
    return dm.make_scenes(N, "train", 7)


def test_shapes_and_ranges(train: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = train
    assert images.shape == (N, 64, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (N, 64, 64) and labels.dtype == np.uint8
    assert labels.max() == 10 and len(dm.CLASSES) == len(dm.PALETTE) == 11


def test_deterministic_per_seed_and_prefix_stable(train: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = dm.make_scenes(N, "train", 7)
    assert np.array_equal(images, train[0]) and np.array_equal(labels, train[1])
    head_images, head_labels = dm.make_scenes(10, "train", 7)
    assert np.array_equal(head_images, train[0][:10]) and np.array_equal(head_labels, train[1][:10])


def test_seeds_and_splits_differ(train: tuple[np.ndarray, np.ndarray]) -> None:
    other_seed = dm.make_scenes(20, "train", 8)
    other_split = dm.make_scenes(20, "val", 7)
    for images, labels in (other_seed, other_split):
        assert not np.array_equal(images, train[0][:20])
        assert not np.array_equal(labels, train[1][:20])


def test_foreground_fraction_and_class_coverage(train: tuple[np.ndarray, np.ndarray]) -> None:
    labels = train[1]
    assert 0.20 < (labels > 0).mean() < 0.35
    counts = np.bincount(labels.ravel(), minlength=11)
    assert (counts > 0).all(), counts


def test_foreground_is_brighter_than_background(train: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = train
    grey = images.astype(np.float64).mean(axis=-1)
    assert grey[labels > 0].mean() - grey[labels == 0].mean() > 80


def test_upsample_matches_torch_bilinear() -> None:
    x = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[:, None], scale_factor=2, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(dm.upsample2x(x), ref[:, 0].numpy(), atol=1e-6)


def test_labels_follow_the_source_digits(train: tuple[np.ndarray, np.ndarray]) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    peak = digits.images.reshape(len(digits.images), -1).max(axis=1)[:, None, None]
    masks = dm.upsample2x(digits.images / peak) > dm.FOREGROUND_THRESHOLD
    sources = dm.scene_sources(N, "train", 7)
    cells = train[1].reshape(N, 4, 16, 4, 16).transpose(0, 1, 3, 2, 4).reshape(N, 16, 16, 16)
    empty = sources < 0
    assert 0.15 < empty.mean() < 0.35
    assert not cells[empty].any()
    expected = np.where(masks[sources[~empty]], digits.target[sources[~empty]][:, None, None] + 1, 0)
    assert np.array_equal(cells[~empty], expected)


def test_source_split_is_disjoint_and_stratified() -> None:
    train_idx, val_idx = dm.source_indices("train"), dm.source_indices("val")
    assert np.intersect1d(train_idx, val_idx).size == 0
    assert np.array_equal(np.union1d(train_idx, val_idx), np.arange(1797))
    assert abs(len(val_idx) - 0.25 * 1797) < 6
    from sklearn.datasets import load_digits

    target = load_digits().target
    assert set(target[val_idx]) == set(target[train_idx]) == set(range(10))
    used = dm.scene_sources(400, "val", 3)
    assert np.isin(used[used >= 0], val_idx).all()


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"n": 0}, "0"),
        ({"n": -3}, "-3"),
        ({"n": 2.5}, "2.5"),
        ({"n": True}, "True"),
        ({"split": "test"}, "'test'"),
        ({"seed": -1}, "-1"),
        ({"seed": "1"}, "'1'"),
    ],
)
def test_make_scenes_rejects_bad_arguments(kwargs: dict[str, object], bad: str) -> None:
    args = {"n": 2, "split": "train", "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=bad):
        dm.make_scenes(**args)  # type: ignore[arg-type]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def test_layout_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    root = dm.write_mmseg_layout(tmp_path / "mosaic", n_train=8, n_val=4, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mosaic"]
    for split, n in (("train", 8), ("val", 4)):
        images, labels = dm.make_scenes(n, split, 1)
        names = sorted(p.name for p in (root / "img_dir" / split).iterdir())
        assert names == sorted(p.name for p in (root / "ann_dir" / split).iterdir())
        assert names == [f"{i:05d}.png" for i in range(n)]
        for i, name in enumerate(names):
            assert np.array_equal(_read_png(root / "img_dir" / split / name), images[i])
            assert np.array_equal(_read_png(root / "ann_dir" / split / name), labels[i])
    meta = json.loads((root / "meta.json").read_text())
    assert meta["classes"] == list(dm.CLASSES) and meta["seed"] == 1
    assert meta["counts"] == {"train": 8, "val": 4}
    assert sum(meta["pixel_counts"]["val"]) == 4 * 64 * 64


def test_layout_rerun_is_noop_and_new_args_replace(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    root = dm.write_mmseg_layout(tmp_path / "mosaic", 3, 2, 0)
    stamp = (root / "meta.json").stat().st_mtime_ns
    dm.write_mmseg_layout(tmp_path / "mosaic", 3, 2, 0)
    assert (root / "meta.json").stat().st_mtime_ns == stamp
    dm.write_mmseg_layout(tmp_path / "mosaic", 2, 2, 5)
    assert len(list((root / "img_dir" / "train").iterdir())) == 2
    assert json.loads((root / "meta.json").read_text())["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mosaic"]


def test_layout_refuses_foreign_directory_and_cleans_up_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("PIL")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="foreign"):
        dm.write_mmseg_layout(foreign, 2, 2, 0)
    assert (foreign / "keep.txt").read_text() == "mine"

    def fail(*_args: object) -> list[int]:
        raise OSError("disk full")

    monkeypatch.setattr(dm, "_write_split", fail)
    with pytest.raises(OSError, match="disk full"):
        dm.write_mmseg_layout(tmp_path / "mosaic", 2, 2, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign"]


@pytest.mark.parametrize(
    ("kwargs", "bad"), [({"n_train": 0}, "n_train"), ({"n_val": -1}, "n_val"), ({"seed": 1.5}, "1.5")]
)
def test_layout_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object], bad: str) -> None:
    args = {"n_train": 2, "n_val": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=bad):
        dm.write_mmseg_layout(tmp_path / "mosaic", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "mosaic").exists()
