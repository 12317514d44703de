"""The data stage's work: make (or point at) the dataset and describe it in ``dataset.json``.

Later stages never read the ``data`` section of ``params.yaml``: they read ``dataset.json``, which
names the data root, so a change of the data params reruns them through their dependency on the
data stage's output folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cpd.pipeline.params import DataParams, ParamsError

DATASET_FILE = "dataset.json"
#: (images folder, labels folder) of the dataset layouts :func:`check_layout` knows.
LAYOUTS = (("img_dir", "ann_dir"), ("images", "annotations"))


def prepare_data(params: DataParams, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the embedded scenes under ``out_dir`` (digit mosaic or digit pairs), or check a dataset folder.

    Args:
        params: the ``data`` section.
        out_dir: the stage's output folder (created); receives ``dataset.json`` and the embedded
            scenes in ``digit_mosaic/`` (mmseg layout) or ``digit_pairs/`` (mmpretrain's folder layout).

    Returns:
        What ``dataset.json`` holds: ``source``, ``data_root`` and, for the embedded sets, the
        scene counts, classes and per-class pixel (digit mosaic) or image (digit pairs) counts.

    Raises:
        ParamsError: ``source: folder`` and ``root`` is not a folder, or a split of a known layout has
            images without labels (see :func:`check_layout`).
    """
    out = Path(out_dir)
    if params.source == "folder":
        root = Path(params.root)
        if not root.is_dir():
            raise ParamsError(f"data.root={params.root!r}: not a folder (source 'folder' needs an existing "
                              "dataset in the layout the training config expects)")
        check_layout(root)
        info: dict[str, Any] = {"source": "folder", "data_root": str(root)}
    elif params.source == "digit_pairs":
        from cpd.data import digit_pairs

        root = digit_pairs.write_mmpretrain_layout(out / "digit_pairs", params.n_train, params.n_val, params.seed)
        meta = digit_pairs.read_layout_meta(root) or {}
        info = {"source": "digit_pairs", "data_root": root.as_posix(), "counts": meta.get("counts"),
                "seed": meta.get("seed"), "classes": meta.get("classes"), "class_counts": meta.get("class_counts")}
    else:
        from cpd.data.digit_mosaic import read_layout_meta, write_mmseg_layout

        root = write_mmseg_layout(out / "digit_mosaic", params.n_train, params.n_val, params.seed)
        meta = read_layout_meta(root) or {}
        info = {"source": "digit_mosaic", "data_root": root.as_posix(), "counts": meta.get("counts"),
                "seed": meta.get("seed"), "classes": meta.get("classes"), "pixel_counts": meta.get("pixel_counts")}
    out.mkdir(parents=True, exist_ok=True)
    (out / DATASET_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def check_layout(root: str | os.PathLike[str]) -> list[str]:
    """Check that every image of a dataset folder has its label, in the layouts mmseg's datasets use.

    For each known pair of folders present (``img_dir``/``ann_dir`` as in the digit mosaic and most
    mmseg datasets, ``images``/``annotations`` as in ADE20K), every split folder of images must have
    the same split of labels, and every image a label of the same stem. Other layouts are left to
    the training config (their naming rules vary too much to guess).

    Args:
        root: the dataset folder.

    Returns:
        The splits checked, as ``"img_dir/train"``...

    Raises:
        ParamsError: a split folder without its labels folder, or images without a label (names the
            first few).
    """
    root = Path(root)
    checked = []
    for images, labels in LAYOUTS:
        if not (root / images).is_dir():
            continue
        for split in sorted(p for p in (root / images).iterdir() if p.is_dir()):
            ann = root / labels / split.name
            if not ann.is_dir():
                raise ParamsError(f"data.root={os.fspath(root)!r}: {images}/{split.name} has no labels folder "
                                  f"{labels}/{split.name}; every image needs a label of the same name")
            label_stems = {p.stem for p in ann.iterdir() if p.is_file()}
            lacking = sorted(p.name for p in split.iterdir() if p.is_file() and p.stem not in label_stems)
            if lacking:
                raise ParamsError(f"data.root={os.fspath(root)!r}: {len(lacking)} image(s) of {images}/{split.name} "
                                  f"have no label in {labels}/{split.name} (first: {lacking[:3]}); every image "
                                  "needs a label of the same name")
            checked.append(f"{images}/{split.name}")
    return checked


def read_dataset(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the ``dataset.json`` written by :func:`prepare_data`.

    Raises:
        FileNotFoundError: the data stage has not run.
        ValueError: the file is damaged (one line naming it).
    """
    from cpd.safe_load import read_json

    path = Path(data_dir) / DATASET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the data stage first (dvc repro data)")
    return read_json(path, "dataset description", "the JSON the data stage writes (dvc repro data)")
