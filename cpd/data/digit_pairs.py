"""Digit pairs: an image classification dataset built offline from scikit-learn's handwritten digits.

A scene is a 32x32 RGB canvas cut into a 2x2 grid of 16 px cells. Two of the four cells, drawn at
random, each hold one 8x8 digit upsampled 2x (bilinear), scaled by a contrast in [0.6, 1.0] and
composited by pixel-wise max onto a low-contrast background gradient; Gaussian noise (sigma 0.08) is
added last. The label is the larger of the two digits: a property of both, so a model must read each
of them wherever they are (a misread digit often changes the class), and every class but 0 mixes many
pairs in every arrangement. (The sum modulo 10, tried first, gave a small CNN no signal to start from:
its loss stayed at chance for hundreds of steps.) Classes are uneven: ``P(k) = (2k + 1) / 100``.

Source digits are split as for :mod:`cpd.data.digit_mosaic` (75/25 per class, independent of the
scene seed), so scenes of the two splits never share a source digit. One random stream per
(seed, split) makes the scenes; equal arguments give identical arrays.

Needs numpy, scikit-learn (``load_digits``) and, for writing files, Pillow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cpd.data.digit_mosaic import CONTRAST, NOISE_SIGMA, SPLITS, _source, check_count, check_seed, check_split, \
    background, source_indices, write_layout

CLASSES: tuple[str, ...] = tuple(str(k) for k in range(10))
CELL = 16
GRID = 2
CANVAS = CELL * GRID
DIGITS_PER_SCENE = 2
LAYOUT_NAME = "digit_pairs"
LAYOUT_VERSION = 1


def make_scenes(n: int, split: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``n`` digit-pair scenes.

    Args:
        n: number of scenes, >= 1.
        split: ``"train"`` or ``"val"``; selects the pool of source digits.
        seed: non-negative integer; equal arguments give identical arrays.

    Returns:
        ``(images, labels, digits)``: uint8 ``[n, 32, 32, 3]`` (RGB), int64 ``[n]`` in ``0..9`` and the
        digits shown, int64 ``[n, 4]`` per cell in row-major order (``-1`` for an empty cell).

    Raises:
        ValueError: on a non-positive ``n``, an unknown ``split`` or a negative ``seed``.
    """
    n, split, seed = check_count("n", n), check_split(split), check_seed(seed)
    cells_all, _, targets = _source()
    pool = source_indices(split)
    rng = np.random.default_rng([seed, SPLITS.index(split), 1])
    n_cells = GRID * GRID
    # the cells that hold a digit: the first DIGITS_PER_SCENE of a random permutation of the four
    order = np.argsort(rng.random((n, n_cells)), axis=1)
    occupied = np.zeros((n, n_cells), dtype=bool)
    np.put_along_axis(occupied, order[:, :DIGITS_PER_SCENE], True, axis=1)
    sources = np.where(occupied, pool[rng.integers(0, len(pool), size=(n, n_cells))], -1)
    contrast = rng.uniform(*CONTRAST, size=(n, n_cells, 1, 1)).astype(np.float32)

    safe = np.maximum(sources, 0)
    digits = np.where(occupied, targets[safe], -1)
    labels = digits.max(axis=1).astype(np.int64)  # empty cells hold -1
    intensity = cells_all[safe] * occupied[:, :, None, None] * contrast
    canvas = intensity.reshape(n, GRID, GRID, CELL, CELL).transpose(0, 1, 3, 2, 4).reshape(n, CANVAS, CANVAS)
    images = np.maximum(background(rng, n, CANVAS), canvas[..., None])
    images += rng.standard_normal(images.shape, dtype=np.float32) * NOISE_SIGMA
    images = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    return images, labels, digits


def read_layout_meta(root: str | os.PathLike[str]) -> dict[str, object] | None:
    """Return the ``meta.json`` of a layout written by :func:`write_mmpretrain_layout`, or None if there is none."""
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
    """True if ``meta`` answers ``request`` and every split holds the expected number of images."""
    if meta is None or any(meta.get(key) != value for key, value in request.items()):
        return False
    counts = meta["counts"]
    return isinstance(counts, dict) and all(
        (root / split).is_dir() and sum(len(os.listdir(d)) for d in (root / split).iterdir()) == counts[split]
        for split in SPLITS)


def _write_split(root: Path, split: str, n: int, seed: int) -> list[int]:
    """Write the PNGs of one split as ``<split>/<class>/NNNNN.png``; return the count per class."""
    from PIL import Image

    images, labels, _ = make_scenes(n, split, seed)
    width = max(5, len(str(n - 1)))
    for name in CLASSES:  # every class folder, even an empty one, so class indices never shift
        (root / split / name).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(images[i]).save(root / split / CLASSES[labels[i]] / f"{i:0{width}d}.png", compress_level=1)
    return np.bincount(labels, minlength=len(CLASSES)).tolist()


def write_mmpretrain_layout(root: str | os.PathLike[str], n_train: int, n_val: int, seed: int) -> Path:
    """Write a digit-pair dataset in the folder layout of mmpretrain's ``CustomDataset``.

    Writes ``{train,val}/<class>/NNNNN.png`` (RGB; class folders ``0`` .. ``9``) and ``meta.json``
    (classes, image counts per split and per class, seed). Everything is built in a temporary sibling
    directory and renamed into place, so ``root`` never holds a partial dataset. If ``root`` already
    holds a complete layout for the same arguments nothing is written; a layout for other arguments is
    replaced.

    Args:
        root: target directory; its parent is created if needed.
        n_train: number of training scenes, >= 1.
        n_val: number of validation scenes, >= 1.
        seed: non-negative scene seed (the source digit split does not depend on it).

    Returns:
        ``root`` as a Path.

    Raises:
        ValueError: on a bad count or seed.
        FileExistsError: if ``root`` is a non-empty directory that is not a digit-pair layout.
    """
    n_train, n_val, seed = check_count("n_train", n_train), check_count("n_val", n_val), check_seed(seed)
    request = _request(n_train, n_val, seed)

    def write(tmp: Path) -> None:
        per_class = {split: _write_split(tmp, split, n, seed) for split, n in (("train", n_train), ("val", n_val))}
        full = {**request, "classes": list(CLASSES), "class_counts": per_class}
        (tmp / "meta.json").write_text(json.dumps(full, indent=2) + "\n")

    return write_layout(Path(root), request, read_layout_meta, _is_complete, write, "digit-pair")
