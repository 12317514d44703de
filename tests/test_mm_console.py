"""A quiet stage console: a Runner's environment and config dumps stay in its log file, progress and new
warnings reach the console, each warning once per process."""
from __future__ import annotations

import logging
import uuid
import warnings
from pathlib import Path

import pytest

pytest.importorskip("mmseg")

import cpd.mm  # noqa: E402,F401  (the mmcv shim before mmseg)
from cpd.mm.console import ENV_VAR, ConsoleFilter, quiet_console  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.mm


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("mmengine", level, __file__, 1, message, None, None)


def test_the_filter_passes_progress_errors_and_each_new_warning_once() -> None:
    console = ConsoleFilter()
    assert console.filter(record(logging.INFO, "Iter(train) [  50/2000]  lr: 1.0e-03  loss: 0.5"))
    assert console.filter(record(logging.INFO, "PruningHook: step 20: removed 28 units"))
    assert not console.filter(record(logging.INFO, "Config:\nmodel = dict(...)"))
    assert not console.filter(record(logging.INFO, "Hooks will be executed in the following order:"))
    assert console.filter(record(logging.WARNING, "a checkpoint key is missing"))
    assert not console.filter(record(logging.WARNING, "a checkpoint key is missing"))  # once
    assert not console.filter(record(logging.WARNING, '"FileClient" will be deprecated in future.'))
    assert console.filter(record(logging.ERROR, "a checkpoint key is missing"))


def test_a_quiet_runner_logs_its_dumps_to_the_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    from mmengine.runner import Runner

    from cpd.mm import load_config

    monkeypatch.setattr(Runner, "build_logger", Runner.build_logger)  # undone after the test
    monkeypatch.delenv(ENV_VAR, raising=False)
    cfg = load_config(ROOT / "configs" / "embedded" / "vit_digits.py")
    cfg.work_dir, cfg.experiment_name = str(tmp_path), f"quiet-{uuid.uuid4().hex[:8]}"
    with warnings.catch_warnings():
        quiet_console()
        quiet_console()  # idempotent
        runner = Runner.from_cfg(cfg)
        runner.logger.info("Iter(train) [1/1]  loss: 0.5")
        runner.logger.info("per class results: a table")
    console = capsys.readouterr().out
    log = Path(runner.logger.log_file).read_text()
    assert "Config:" in log and "per class results" in log and "Iter(train) [1/1]" in log
    assert "Config:" not in console and "per class results" not in console
    assert "Iter(train) [1/1]" in console
    assert console.count("Iter(train) [1/1]") == 1  # the filter is on the handler once
