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


def prepare_data(params: DataParams, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the digit mosaic scenes under ``out_dir``, or check an existing dataset folder.

    Args:
        params: the ``data`` section.
        out_dir: the stage's output folder (created); receives ``dataset.json`` and, for the
            digit mosaic, the scenes in ``digit_mosaic/``.

    Returns:
        What ``dataset.json`` holds: ``source``, ``data_root`` and, for the digit mosaic, the
        scene counts, classes and per-class pixel counts.

    Raises:
        ParamsError: ``source: folder`` and ``root`` is not a folder.
    """
    out = Path(out_dir)
    if params.source == "folder":
        root = Path(params.root)
        if not root.is_dir():
            raise ParamsError(f"data.root={params.root!r}: not a folder (source 'folder' needs an existing "
                              "dataset in the layout the training config expects)")
        info: dict[str, Any] = {"source": "folder", "data_root": str(root)}
    else:
        from cpd.data.digit_mosaic import read_layout_meta, write_mmseg_layout

        root = write_mmseg_layout(out / "digit_mosaic", params.n_train, params.n_val, params.seed)
        meta = read_layout_meta(root) or {}
        info = {"source": "digit_mosaic", "data_root": root.as_posix(), "counts": meta.get("counts"),
                "seed": meta.get("seed"), "classes": meta.get("classes"), "pixel_counts": meta.get("pixel_counts")}
    out.mkdir(parents=True, exist_ok=True)
    (out / DATASET_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def read_dataset(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the ``dataset.json`` written by :func:`prepare_data`.

    Raises:
        FileNotFoundError: the data stage has not run.
    """
    path = Path(data_dir) / DATASET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the data stage first (dvc repro data)")
    return json.loads(path.read_text())
