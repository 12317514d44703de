"""benchmarks/zoo.py: config names per library, family-first order, one docs section per library with every reason."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"
_spec = importlib.util.spec_from_file_location("bench_zoo", SCRIPT)
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)


def test_config_names_and_families() -> None:
    assert zoo.config_name("mmseg", "pspnet/a.py") == "pspnet/a.py"  # as in the existing mmseg cache
    assert zoo.config_name("mmdet", "yolox/a.py") == "mmdet::yolox/a.py"
    assert zoo.family("mmdet::yolox/a.py") == zoo.family("yolox/a.py") == "yolox"


def test_every_family_comes_before_any_second_architecture() -> None:
    configs = ["a/1.py", "a/2.py", "a/3.py", "b/1.py", "c/1.py", "c/2.py"]
    assert zoo.families_first(configs) == ["a/1.py", "b/1.py", "c/1.py", "a/2.py", "c/2.py", "a/3.py"]


def _row(config: str, status: str, reason: str = "") -> dict:
    row = {"config": config, "family": zoo.family(config), "status": status, "reason": reason}
    if status in ("pass", "fail"):
        row.update(size=64, groups=3, prunable_groups=2, params_before=2e6, params_after=1e6, macs_before=1e9,
                   macs_after=5e8)
    return row


def test_markdown_has_a_section_per_library_and_lists_every_non_pass(tmp_path: Path) -> None:
    det_archs = {"k1": ["mmdet::retinanet/r.py"], "k2": ["mmdet::faster_rcnn/f.py"], "k3": ["mmdet::yolox/y.py"],
                 "k4": ["mmdet::ssd/s.py"]}
    det_rows = [_row("mmdet::retinanet/r.py", "pass"),
                _row("mmdet::faster_rcnn/f.py", "skip", "TypeError: FasterRCNN is not a single-stage detector"),
                _row("mmdet::yolox/y.py", "fail", "output 0: pruned differs")]
    cls_archs = {"k": ["mmpretrain::resnet/r.py"]}
    out = tmp_path / "zoo.md"
    zoo.write_markdown({"mmpretrain": ([_row("mmpretrain::resnet/r.py", "pass")], cls_archs),
                        "mmdet": (det_rows, det_archs)}, out)
    text = out.read_text()
    assert "## Classification: mmpretrain 1.2.0" in text and "## Detection: mmdet 3.3.0" in text
    assert text.index("## Classification") < text.index("## Detection")
    det = text.split("## Detection")[1]
    assert "architectures: 4 (4 configs); **1 not swept yet**" in det
    assert "checked: 2; **pass: 1 (50.0% of checked)**" in det
    assert "1 (faster_rcnn): not a single-stage detector" in det
    assert "failed: 1 (yolox)" in det and "FAIL: output 0: pruned differs" in det
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file
