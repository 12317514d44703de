"""Log training to DVCLive from an mmengine runner, without touching git or DVC.

mmengine's ``DVCLiveVisBackend`` runs ``dvc init -f`` when it finds no DVC repository where it
looks (wiping an existing ``.dvc/`` that has no git identity to commit with) and lets DVCLive save
experiments. This hook only writes metric files: ``save_dvc_exp=False`` and no ``dvc.yaml``.

Configs reach it with ``custom_imports = dict(imports=['cpd.mm.dvclive_hook'])`` and
``custom_hooks = [dict(type='DVCLiveLoggerHook', interval=50)]``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DVCLiveLoggerHook(Hook):
    """Write train losses and learning rates every ``interval`` iterations, and val metrics.

    Only the main process logs. The DVCLive step is the number of finished training iterations,
    so train and val curves share one axis. Names are ``train/<key>`` for the losses and
    accuracies the model returns (``train/loss``, ``train/decode.loss_ce``, ...), ``train/lr``
    for the learning rate of the first parameter group, and ``val/<key>`` for the evaluator's
    metrics as it reports them (mmseg's ``mIoU`` is in percent).

    Args:
        interval: log train values every ``interval`` iterations (>= 1).
        dir: the DVCLive folder; ``<work_dir>/dvclive`` when None.
        resume: keep what an earlier run logged in ``dir``. None: resume when the runner resumes
            training (its iteration count is above 0 when training starts).

    Raises:
        ValueError: ``interval`` is not a positive integer, or ``dir`` is an empty string.
    """

    priority = "BELOW_NORMAL"

    def __init__(self, interval: int = 50, dir: str | os.PathLike[str] | None = None,
                 resume: bool | None = None) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive integer, got {interval!r}")
        if dir is not None and not os.fspath(dir):
            raise ValueError("dir must be a non-empty path or None")
        self.interval = interval
        self.dir = dir
        self.resume = resume
        self._live: Any = None

    def before_train(self, runner: Any) -> None:
        """Open the DVCLive logger (after a resumed checkpoint is loaded, so the step is known)."""
        if not is_main_process():
            return
        from dvclive import Live

        folder = Path(self.dir) if self.dir is not None else Path(runner.work_dir) / "dvclive"
        resume = runner.iter > 0 if self.resume is None else self.resume
        self._live = Live(dir=str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Mapping[str, Any] | None = None) -> None:
        """Log the model's loss values and the learning rate every ``interval`` iterations."""
        if self._live is None or not self.every_n_train_iters(runner, self.interval):
            return
        values = {f"train/{key}": value for key, value in (outputs or {}).items()}
        for key, lrs in runner.optim_wrapper.get_lr().items():
            if not key.endswith("base_lr") and lrs:
                values[f"train/{key}"] = lrs[0]
        self._log(runner.iter + 1, values)

    def after_val_epoch(self, runner: Any, metrics: Mapping[str, Any] | None = None) -> None:
        """Log the evaluator's metrics at the current training step."""
        if self._live is None or not metrics:
            return
        self._log(runner.iter, {f"val/{key}": value for key, value in metrics.items()})

    def after_run(self, runner: Any) -> None:
        """Write DVCLive's summary and close it."""
        if self._live is not None:
            self._live.end()
            self._live = None

    def _log(self, step: int, values: Mapping[str, Any]) -> None:
        self._live.step = step
        logged = False
        for name, value in values.items():
            number = _scalar(value)
            if number is not None:
                self._live.log_metric(name, number)
                logged = True
        if logged:
            self._live.make_summary()


def _scalar(value: Any) -> float | None:
    """A finite float from a number or one-element tensor/array; None for anything else."""
    if hasattr(value, "numel") and hasattr(value, "item"):
        value = value.item() if value.numel() == 1 else None
    elif hasattr(value, "size") and hasattr(value, "item"):
        value = value.item() if value.size == 1 else None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
