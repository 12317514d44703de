"""Digit boxes: an object detection dataset made from the digit mosaic scenes, in COCO's json format.

The scenes are :func:`cpd.data.digit_mosaic.make_scenes`' 64x64 canvases (a 4x4 grid of 16 px cells,
each empty or holding one digit). Every digit is one object: its box is the tightest box around the
digit's foreground pixels (the pixels the segmentation labels mark, intensity above 0.4), its class the
digit ``0..9``. Boxes come from the labels, not from the cell, so they fit the strokes (a "1" is narrow)
and never cross a cell border; digits are 6-16 px wide, small objects at 64x64.

The layout is what mmdet's ``CocoDataset`` reads (pycocotools parses the json)::

    root/train/NNNNN.png  root/val/NNNNN.png
    root/annotations/train.json  root/annotations/val.json
    root/meta.json

Needs numpy, scikit-learn (``load_digits``) and, for writing files, Pillow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cpd.data.digit_mosaic import CELL, GRID, SPLITS, check_count, check_seed, make_scenes, write_layout

CLASSES: tuple[str, ...] = tuple(str(k) for k in range(10))
LAYOUT_NAME = "digit_boxes"
LAYOUT_VERSION = 1


def scene_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boxes and classes of the digits of one scene.

    Args:
        labels: ``(64, 64)`` segmentation labels of a scene (0 background, digit ``k`` -> ``k + 1``).

    Returns:
        ``(boxes, classes)``: float32 ``(k, 4)`` boxes ``x1, y1, x2, y2`` in pixels (``x2``/``y2`` one past
        the last foreground pixel), int64 ``(k,)`` digits ``0..9``, in row-major cell order.

    Raises:
        ValueError: ``labels`` is not a ``(64, 64)`` array.
    """
    side = GRID * CELL
    if labels.shape != (side, side):
        raise ValueError(f"labels must be a ({side}, {side}) scene, got shape {labels.shape}")
    boxes, classes = [], []
    for row in range(GRID):
        for col in range(GRID):
            cell = labels[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL]
            ys, xs = np.nonzero(cell)
            if len(ys) == 0:  # an empty cell (a digit without a pixel above the threshold has no box either)
                continue
            x0, y0 = col * CELL, row * CELL
            boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
            classes.append(int(cell[ys[0], xs[0]]) - 1)
    return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(classes, dtype=np.int64))


def make_detection_scenes(n: int, split: str, seed: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Generate ``n`` scenes with their boxes.

    Args:
        n: number of scenes, >= 1.
        split: ``"train"`` or ``"val"``.
        seed: non-negative integer; equal arguments give identical scenes and boxes.

    Returns:
        ``(images, boxes, classes)``: uint8 ``[n, 64, 64, 3]`` images (the digit mosaic's), and per scene
        the boxes and classes of :func:`scene_boxes`.

    Raises:
        ValueError: as :func:`cpd.data.digit_mosaic.make_scenes`.
    """
    images, labels = make_scenes(n, split, seed)
    found = [scene_boxes(scene) for scene in labels]
    return images, [b for b, _ in found], [c for _, c in found]


def coco_document(boxes: list[np.ndarray], classes: list[np.ndarray], names: list[str], size: int) -> dict:
    """The COCO json of one split: images, one annotation per digit, the ten categories.

    Category ids are ``1..10`` for digits ``0..9`` (COCO reserves 0); ``bbox`` is ``[x, y, w, h]``.

    Args:
        boxes: per image, ``(k, 4)`` boxes ``x1, y1, x2, y2``.
        classes: per image, ``(k,)`` digits.
        names: per image, its file name relative to the split's image folder.
        size: the images' side in pixels.

    Returns:
        The document, ready for ``json.dump``.
    """
    images, annotations = [], []
    for image_id, (image_boxes, image_classes, name) in enumerate(zip(boxes, classes, names, strict=True), 1):
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for (x1, y1, x2, y2), digit in zip(image_boxes.tolist(), image_classes.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": digit + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def read_layout_meta(root: str | os.PathLike[str]) -> dict[str, object] | None:
    """Return the ``meta.json`` of a layout written by :func:`write_coco_layout`, or None if there is none."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and meta.get("name") == LAYOUT_NAME else None


def _request(n_train: int, n_val: int, seed: int) -> dict[str, object]:
    return {"name": LAYOUT_NAME, "version": LAYOUT_VERSION, "seed": seed, "counts": {"train": n_train, "val": n_val}}


def _is_complete(root: Path, meta: dict[str, object] | None, request: dict[str, object]) -> bool:
    """True if ``meta`` answers ``request`` and every split holds its images and its json."""
    if meta is None or any(meta.get(key) != value for key, value in request.items()):
        return False
    counts = meta["counts"]
    return isinstance(counts, dict) and all(
        (root / split).is_dir() and len(os.listdir(root / split)) == counts[split]
        and (root / "annotations" / f"{split}.json").is_file() for split in SPLITS)


def _write_split(root: Path, split: str, n: int, seed: int) -> int:
    """Write one split's PNGs and its json under ``root``; return its number of boxes."""
    from PIL import Image

    images, boxes, classes = make_detection_scenes(n, split, seed)
    width = max(5, len(str(n - 1)))
    names = [f"{i:0{width}d}.png" for i in range(n)]
    (root / split).mkdir(parents=True)
    for image, name in zip(images, names):
        Image.fromarray(image).save(root / split / name, compress_level=1)
    (root / "annotations").mkdir(exist_ok=True)
    document = coco_document(boxes, classes, names, images.shape[1])
    (root / "annotations" / f"{split}.json").write_text(json.dumps(document))
    return len(document["annotations"])


def write_coco_layout(root: str | os.PathLike[str], n_train: int, n_val: int, seed: int) -> Path:
    """Write a digit-box dataset in the layout of mmdet's ``CocoDataset`` (see the module docstring).

    Everything is built in a temporary sibling directory and renamed into place, so ``root`` never holds
    a partial dataset. If ``root`` already holds a complete layout for the same arguments nothing is
    written; a layout for other arguments is replaced.

    Args:
        root: target directory; its parent is created if needed.
        n_train: number of training scenes, >= 1.
        n_val: number of validation scenes, >= 1.
        seed: non-negative scene seed (the source digit split does not depend on it).

    Returns:
        ``root`` as a Path.

    Raises:
        ValueError: on a bad count or seed.
        FileExistsError: if ``root`` is a non-empty directory that is not a digit-box layout.
    """
    n_train, n_val, seed = check_count("n_train", n_train), check_count("n_val", n_val), check_seed(seed)
    request = _request(n_train, n_val, seed)

    def write(tmp: Path) -> None:
        per_split = {split: _write_split(tmp, split, n, seed) for split, n in (("train", n_train), ("val", n_val))}
        full = {**request, "classes": list(CLASSES), "box_counts": per_split}
        (tmp / "meta.json").write_text(json.dumps(full, indent=2) + "\n")

    return write_layout(Path(root), request, read_layout_meta, _is_complete, write, "digit-box")
