"""Digit mosaic: a semantic segmentation dataset built offline from scikit-learn's handwritten digits.

A scene is a 64x64 RGB canvas cut into a 4x4 grid of 16 px cells. Each cell is empty with
probability 0.25, else holds one 8x8 digit upsampled 2x (bilinear), scaled by a contrast in
[0.6, 1.0] and composited by pixel-wise max onto a low-contrast background gradient; Gaussian
noise (sigma 0.08) is added last. The label of a pixel is ``k + 1`` for digit ``k`` where the
digit's normalised intensity exceeds 0.4, else 0 (background): about 28% of pixels are foreground.

The 1,797 source digits are split once, 75/25 per class and independent of any scene seed, into
``train`` and ``val`` pools, so scenes of the two splits never share a source digit. Scenes are
generated in fixed chunks with one random stream per (seed, split, chunk): the first ``k`` scenes
of ``make_scenes(n, ...)`` equal ``make_scenes(k, ...)``.

Needs numpy, scikit-learn (``load_digits``) and, for writing files, Pillow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
import json
import numbers
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

CLASSES: tuple[str, ...] = ("background",) + tuple(str(k) for k in range(10))
# Background black, then one distinct colour per digit 0..9.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)
SPLITS: tuple[str, ...] = ("train", "val")

CANVAS = 64
CELL = 16
GRID = CANVAS // CELL
EMPTY_P = 0.25
CONTRAST = (0.6, 1.0)
NOISE_SIGMA = 0.08
FOREGROUND_THRESHOLD = 0.4
VAL_FRACTION = 0.25
# Fixed so that the source split never depends on the scene seed.
SPLIT_SEED = 20240229
CHUNK = 256


def check_count(name: str, value: object) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_seed(seed: object) -> int:
    """Return ``seed`` as an int if it is a non-negative integer, else raise ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_split(split: object) -> str:
    """Return ``split`` if it is one of SPLITS, else raise ValueError."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return str(split)


def upsample2x(images: np.ndarray) -> np.ndarray:
    """Upsample the last two axes by 2, bilinear with half-pixel centres (align_corners=False)."""
    out = images
    for axis in (-1, -2):
        a = np.moveaxis(out, axis, -1)
        prev = np.concatenate([a[..., :1], a[..., :-1]], axis=-1)
        nxt = np.concatenate([a[..., 1:], a[..., -1:]], axis=-1)
        pairs = np.stack([0.75 * a + 0.25 * prev, 0.75 * a + 0.25 * nxt], axis=-1)
        out = np.moveaxis(pairs.reshape(*a.shape[:-1], 2 * a.shape[-1]), -1, axis)
    return out


@functools.lru_cache(maxsize=1)
def _source() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return read-only (intensity float32 [1797, 16, 16] peaking at 1, foreground bool, targets int64).

    The foreground mask is thresholded in float64: many upsampled values land exactly on 0.4.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    peak = digits.images.reshape(len(digits.images), -1).max(axis=1)[:, None, None]
    cells = upsample2x(digits.images / peak)
    arrays = (cells.astype(np.float32), cells > FOREGROUND_THRESHOLD, digits.target.astype(np.int64))
    for array in arrays:
        array.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=len(SPLITS))
def source_indices(split: str) -> np.ndarray:
    """Return the sorted indices into ``load_digits()`` that scenes of ``split`` draw from.

    The split is stratified per class (25% of each class to ``val``) with a fixed seed.

    Raises:
        ValueError: if ``split`` is not one of SPLITS.
    """
    check_split(split)
    targets = _source()[2]
    rng = np.random.default_rng(SPLIT_SEED)
    val = []
    for k in range(10):
        members = np.flatnonzero(targets == k)
        val.append(rng.permutation(members)[: round(VAL_FRACTION * len(members))])
    is_val = np.zeros(len(targets), dtype=bool)
    is_val[np.concatenate(val)] = True
    indices = np.flatnonzero(is_val if split == "val" else ~is_val)
    indices.setflags(write=False)
    return indices


def _to_canvas(cells: np.ndarray) -> np.ndarray:
    """(m, GRID*GRID, CELL, CELL) -> (m, CANVAS, CANVAS), cells in row-major grid order."""
    m = len(cells)
    return cells.reshape(m, GRID, GRID, CELL, CELL).transpose(0, 1, 3, 2, 4).reshape(m, CANVAS, CANVAS)


def background(rng: np.random.Generator, m: int, canvas: int = CANVAS) -> np.ndarray:
    """Low-contrast linear gradients in random directions with a slight per-channel tint: (m, canvas, canvas, 3)."""
    base = rng.uniform(0.02, 0.18, size=(m, 1, 1, 1)) + rng.uniform(-0.03, 0.03, size=(m, 1, 1, 3))
    amplitude = rng.uniform(0.0, 0.12, size=(m, 1, 1, 1))
    theta = rng.uniform(0.0, 2 * np.pi, size=(m, 1, 1, 1))
    ramp = (np.arange(canvas, dtype=np.float32) + 0.5) / canvas - 0.5
    direction = np.cos(theta) * ramp[None, None, :, None] + np.sin(theta) * ramp[None, :, None, None]
    return (base + amplitude * direction).astype(np.float32)


def _chunk(split: str, seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate chunk ``index`` of CHUNK scenes: (images uint8, labels uint8, sources int64 [m, 16])."""
    cells_all, masks_all, targets = _source()
    pool = source_indices(split)
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    m, n_cells = CHUNK, GRID * GRID
    occupied = rng.random((m, n_cells)) >= EMPTY_P
    sources = np.where(occupied, pool[rng.integers(0, len(pool), size=(m, n_cells))], -1)
    contrast = rng.uniform(*CONTRAST, size=(m, n_cells, 1, 1)).astype(np.float32)

    safe = np.maximum(sources, 0)
    intensity = cells_all[safe] * occupied[:, :, None, None]
    classes = np.where(occupied, targets[safe] + 1, 0).astype(np.uint8)
    labels = np.where(masks_all[safe], classes[:, :, None, None], 0).astype(np.uint8)

    digits = _to_canvas(intensity * contrast)[..., None]
    images = np.maximum(background(rng, m), digits)
    images += rng.standard_normal(images.shape, dtype=np.float32) * NOISE_SIGMA
    images = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    return images, _to_canvas(labels), sources


def make_scenes(n: int, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` digit mosaic scenes.

    Args:
        n: number of scenes, >= 1.
        split: ``"train"`` or ``"val"``; selects the pool of source digits.
        seed: non-negative integer; equal arguments give identical arrays.

    Returns:
        ``(images, labels)``: uint8 arrays of shape ``[n, 64, 64, 3]`` (RGB) and ``[n, 64, 64]``
        with values in ``0..10`` (0 background, digit ``k`` -> ``k + 1``).

    Raises:
        ValueError: on a non-positive ``n``, an unknown ``split`` or a negative ``seed``.
    """
    n, split, seed = check_count("n", n), check_split(split), check_seed(seed)
    chunks = [_chunk(split, seed, i) for i in range(-(-n // CHUNK))]
    images = np.concatenate([c[0] for c in chunks])[:n]
    labels = np.concatenate([c[1] for c in chunks])[:n]
    return images, labels


def scene_sources(n: int, split: str, seed: int) -> np.ndarray:
    """Return the source digit index of each cell of ``make_scenes(n, split, seed)``.

    Returns:
        int64 array ``[n, 16]`` (cells in row-major grid order) of indices into ``load_digits()``,
        ``-1`` for an empty cell.

    Raises:
        ValueError: as ``make_scenes``.
    """
    n, split, seed = check_count("n", n), check_split(split), check_seed(seed)
    return np.concatenate([_chunk(split, seed, i)[2] for i in range(-(-n // CHUNK))])[:n]


LAYOUT_NAME = "digit_mosaic"
LAYOUT_VERSION = 1


def _request(n_train: int, n_val: int, seed: int) -> dict[str, object]:
    return {"name": LAYOUT_NAME, "version": LAYOUT_VERSION, "seed": seed, "counts": {"train": n_train, "val": n_val}}


def read_layout_meta(root: str | os.PathLike[str]) -> dict[str, object] | None:
    """Return the ``meta.json`` of a layout written by ``write_mmseg_layout``, or None if there is none."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    return meta if isinstance(meta, dict) and meta.get("name") == LAYOUT_NAME else None


def _is_complete(root: Path, meta: dict[str, object] | None, request: dict[str, object]) -> bool:
    """True if ``meta`` answers ``request`` and every split directory holds the expected file count."""
    if meta is None or any(meta.get(key) != value for key, value in request.items()):
        return False
    counts = meta["counts"]
    return isinstance(counts, dict) and all(
        (root / top / split).is_dir() and len(os.listdir(root / top / split)) == counts[split]
        for top in ("img_dir", "ann_dir")
        for split in SPLITS
    )


def _write_split(root: Path, split: str, n: int, seed: int) -> list[int]:
    """Write the PNGs of one split under ``root``; return the per-class pixel counts."""
    from PIL import Image

    images, labels = make_scenes(n, split, seed)
    width = max(5, len(str(n - 1)))
    for top in ("img_dir", "ann_dir"):
        (root / top / split).mkdir(parents=True)
    for i in range(n):
        name = f"{i:0{width}d}.png"
        Image.fromarray(images[i]).save(root / "img_dir" / split / name, compress_level=1)
        Image.fromarray(labels[i]).save(root / "ann_dir" / split / name, compress_level=1)
    return np.bincount(labels.ravel(), minlength=len(CLASSES)).tolist()


def write_mmseg_layout(root: str | os.PathLike[str], n_train: int, n_val: int, seed: int) -> Path:
    """Write a digit mosaic dataset in mmsegmentation's directory layout.

    Writes ``img_dir/{train,val}/NNNNN.png`` (RGB), ``ann_dir/{train,val}/NNNNN.png`` (8-bit labels,
    0..10) and ``meta.json`` (classes, palette, scene and pixel counts per split, seed). Everything is
    built in a temporary sibling directory and renamed into place, so ``root`` never holds a partial
    dataset. If ``root`` already holds a complete layout for the same arguments nothing is written;
    a layout for other arguments is replaced.

    Args:
        root: target directory; its parent is created if needed.
        n_train: number of training scenes, >= 1.
        n_val: number of validation scenes, >= 1.
        seed: non-negative scene seed (the source digit split does not depend on it).

    Returns:
        ``root`` as a Path.

    Raises:
        ValueError: on a bad count or seed.
        FileExistsError: if ``root`` is a non-empty directory that is not a digit mosaic layout.
    """
    n_train, n_val, seed = check_count("n_train", n_train), check_count("n_val", n_val), check_seed(seed)
    request = _request(n_train, n_val, seed)

    def write(tmp: Path) -> None:
        pixels = {split: _write_split(tmp, split, n, seed) for split, n in (("train", n_train), ("val", n_val))}
        full = {**request, "classes": list(CLASSES), "palette": [list(c) for c in PALETTE], "pixel_counts": pixels}
        (tmp / "meta.json").write_text(json.dumps(full, indent=2) + "\n")

    return write_layout(Path(root), request, read_layout_meta, _is_complete, write, "digit mosaic")


def write_layout(root: Path, request: dict[str, object],
                 read_meta: Callable[[Path], dict[str, object] | None],
                 is_complete: Callable[[Path, dict[str, object] | None, dict[str, object]], bool],
                 write: Callable[[Path], None], what: str) -> Path:
    """Write a generated dataset at ``root`` unless a complete one for ``request`` is there already.

    Args:
        root: the dataset folder.
        request: what the layout's ``meta.json`` must say (name, version, seed, counts).
        read_meta: reads the ``meta.json`` of a layout of this kind (None when there is none).
        is_complete: ``is_complete(root, meta, request)``: the folder holds that dataset, whole.
        write: writes the dataset into a temporary folder (see :func:`replace_folder`).
        what: the kind of layout, for the refusal.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` is a file, or a non-empty folder that is not a layout of this kind.
    """
    meta = read_meta(root)
    if is_complete(root, meta, request):
        return root
    if root.exists() and (not root.is_dir() or (meta is None and any(root.iterdir()))):
        raise FileExistsError(f"{root} exists and is not a {what} layout; refusing to replace it")
    return replace_folder(root, write)


def replace_folder(root: Path, write: Callable[[Path], None]) -> Path:
    """Build a folder with ``write(temporary folder)`` beside ``root``, then swap it in for ``root``.

    A killed or failed build leaves ``root`` as it was (the temporary folder is removed on an error).

    Returns:
        ``root``.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        write(tmp)
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            root.rename(old / "layout")
            tmp.rename(root)
            shutil.rmtree(old)
        else:
            tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
