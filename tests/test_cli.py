"""The cpd command: usage errors exit 2 without a traceback; comb and check call the core as documented."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import cpd
from cpd.cli import main

ROOT = Path(__file__).resolve().parents[1]
SEGFORMER = "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"
needs_mm = pytest.mark.skipif(importlib.util.find_spec("mmseg") is None, reason="needs mmsegmentation")


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )


@needs_mm
@pytest.mark.mm
def test_missing_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["comb", "no/such_config.py", "--out", str(tmp_path / "deps.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cpd: error: config 'no/such_config.py'")
    assert not (tmp_path / "deps.json").exists()


@needs_mm
@pytest.mark.mm
def test_a_config_that_does_not_parse_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broken.py"
    config.write_text("model = dict(type='EncoderDecoder'\n")
    assert main(["comb", str(config), "--out", str(tmp_path / "deps.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cpd: error: config {str(config)!r} does not parse ('(' was never closed, line 1); expected an " \
                  "mmengine Python config"


@pytest.mark.parametrize(
    "argv",
    [
        ["comb", SEGFORMER, "--out", "d.json", "--size", "0", "64"],
        ["comb", SEGFORMER, "--out", "d.json", "--size", "64"],
        ["check", SEGFORMER, "--size", "a", "b"],
        ["check", SEGFORMER, "--ratio", "1.5"],
        ["comb", SEGFORMER],
        [],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@needs_mm
@pytest.mark.mm
@pytest.mark.parametrize("script", [["-m", "cpd.cli", "comb"], ["tools/gen_prune_cfg.py"]])
def test_usage_errors_print_no_traceback(script: list[str]) -> None:
    result = _python(*script, "missing.py", "--out", "deps.json")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: config 'missing.py' is neither a file nor a config shipped" in result.stderr


@needs_mm
@pytest.mark.mm
def test_size_the_model_cannot_take_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    vit = "vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py"
    assert main(["comb", vit, "--out", "unused.json", "--size", "8", "8"]) == 2
    assert "does not run on a 2x3x8x8 batch" in capsys.readouterr().err


@needs_mm
@pytest.mark.mm
def test_comb_traces_seg_forward_and_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cpd.mm import seg_forward

    calls: dict[str, Any] = {}

    def fake_comb(model: Any, example_inputs: tuple, forward_fn: Any = None, exclude: tuple = ()) -> Any:
        calls.update(inputs=example_inputs, forward_fn=forward_fn, exclude=exclude, training=model.training)
        return SimpleNamespace(groups=[SimpleNamespace(prunable=True), SimpleNamespace(prunable=False)])

    def fake_save(graph: Any, path: Path) -> None:
        Path(path).write_text("{}")

    monkeypatch.setattr(cpd, "comb", fake_comb, raising=False)
    monkeypatch.setattr(cpd, "save_deps", fake_save, raising=False)
    out = tmp_path / "sub" / "deps.json"
    argv = ["comb", SEGFORMER, "--out", str(out), "--size", "64", "96", "--exclude", "a", "b"]
    assert main([*argv, "--exclude", "c"]) == 0
    (inputs,) = calls["inputs"]
    assert inputs.shape == (2, 3, 64, 96)
    assert calls["forward_fn"] is seg_forward
    assert calls["exclude"] == ("a", "b", "c")
    assert calls["training"] is False
    assert out.read_text() == "{}"
    assert "2 groups, 1 prunable" in capsys.readouterr().out


FAKE_CHECK = """
import sys, types
fake = types.ModuleType("cpd.check")
class Report:
    ok = {ok}
    def to_dict(self):
        return {{"ok": self.ok, "ratio": RATIO, "groups": 3, "prunable_groups": 2, "cut_groups": 2,
                 "removed_units": 5, "params_before": 2000000, "params_after": 1000000, "macs_before": 3e9,
                 "macs_after": 1.5e9, "max_abs_err": 1e-6, "rel_err": 1e-7, "onnx": None, "seconds": 1.0,
                 "failures": [] if self.ok else ["output 0: differs"],
                 "not_prunable": {{"reaches a model output": 1}}}}
def check(model, inputs, forward_fn=None, ratio=0.3, onnx=True):
    global RATIO
    RATIO = ratio
    assert forward_fn.__name__ == "seg_forward" and inputs.shape == (2, 3, 64, 64)
    return Report()
fake.check = check
sys.modules["cpd.check"] = fake
from cpd.cli import main
sys.exit(main(sys.argv[1:]))
"""


@needs_mm
@pytest.mark.mm
@pytest.mark.parametrize("ok", [True, False])
def test_check_json_is_clean_and_exit_code_follows_ok(ok: bool) -> None:
    code = textwrap.dedent(FAKE_CHECK.format(ok=ok))
    result = _python("-c", code, "check", SEGFORMER, "--size", "64", "64", "--ratio", "0.5", "--json")
    assert result.returncode == (0 if ok else 1), result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] == ok and report["ratio"] == 0.5 and report["groups"] == 3

    result = _python("-c", code, "check", SEGFORMER, "--size", "64", "64")
    assert result.returncode == (0 if ok else 1), result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{'PASS' if ok else 'FAIL'}: 2 of 3 groups prunable; 5 units cut from 2 groups"
    assert ("params 2.000 M -> 1.000 M; MACs 3.000 G -> 1.500 G (the checked training forward: every head "
            "training uses)") in lines
    assert "not prunable (1): reaches a model output" in lines
    assert ("failure: output 0: differs" in lines) == (not ok)


@needs_mm
@pytest.mark.mm
def test_real_check_and_comb_commands(tmp_path: Path) -> None:
    """The real commands end to end on a small model: exit 0, a clean JSON report, a loadable deps file."""
    result = _python("-m", "cpd.cli", "check", SEGFORMER, "--size", "64", "64", "--json", "--no-onnx")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ok"] and report["prunable_groups"] > 0 and report["params_after"] < report["params_before"]
    out = tmp_path / "deps.json"
    result = _python("tools/gen_prune_cfg.py", SEGFORMER, "--out", str(out), "--size", "64", "64")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["format"] == "cpd-deps" and data["version"] == 1 and data["groups"]
