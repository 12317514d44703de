"""``cpd comb`` / ``cpd check`` and ``tools/gen_prune_cfg.py`` on classification and detection configs, no flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmpretrain")
pytest.importorskip("mmdet")

from cpd import load_deps  # noqa: E402
from cpd.cli import main  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = "mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py"
DETECTOR = "mmdet::atss/atss_r18_fpn_8xb8-amp-lsj-200e_coco.py"


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


def test_check_a_classifier_by_its_shipped_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", CLASSIFIER, "--size", "64", "64", "--json", "--no-onnx"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["params_after"] < report["params_before"]
    assert report["not_prunable"] == {"reaches a model output": 1}  # the class logits


def test_comb_a_detector_with_the_script(tmp_path: Path) -> None:
    out = tmp_path / "deps.json"
    result = _python("tools/gen_prune_cfg.py", DETECTOR, "--out", str(out), "--size", "64", "64")
    assert result.returncode == 0, result.stderr[-2000:]
    graph = load_deps(out)
    kept = [g for g in graph.groups if not g.prunable]
    heads = {m.name for g in kept for m in g.members if m.dim == 0}
    assert {"bbox_head.atss_cls.weight", "bbox_head.atss_reg.weight"} <= heads


def test_a_two_stage_detector_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "--size", "64", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cpd: error: FasterRCNN is not a single-stage detector")
