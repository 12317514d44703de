"""The pipeline's training runs as mmengine configs: baseline, pruning (PruningHook) and distillation (Distiller).

Each function takes the base config (the model's own mmseg config, or the one the baseline was trained
with) and a section of ``params.yaml`` (:mod:`cpd.pipeline.params`), and returns a new config ready for
:func:`cpd.mm.launch.run_config`; the base config is never changed.  Works with any mmseg
``EncoderDecoder`` or mmpretrain ``ImageClassifier`` config: the top-level knobs of the embedded configs
(``data_root``, ``max_iters``, ``val_interval``) are used when a config declares them, the standard paths
otherwise.
"""
from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config, ConfigDict

from cpd.combing import check_exclude, comb
from cpd.graph.group import DependencyGraph
from cpd.mm.build import _drop_checkpoints_, load_config
from cpd.mm.tasks import build_model, example_inputs, pruned_type
from cpd.mm.tasks import task_of
from cpd.mm.train import expand_knobs
from cpd.pipeline.params import CombParams, DistillParams, ParamsError, PruneParams, TrainParams

LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
OWN_HOOKS = ("DVCLiveLoggerHook", "PruningHook")


def live_interval(max_iters: int) -> int:
    """How often the DVCLive hook logs train values: every 50 iterations, more often in short runs."""
    return max(1, min(50, max_iters // 40))


def with_imports(cfg: Config, modules: Sequence[str]) -> None:
    """Add ``modules`` to the config's ``custom_imports`` (kept in order, no duplicates)."""
    imports = cfg.get("custom_imports") or {}
    have = imports.get("imports", [])
    have = [have] if isinstance(have, str) else list(have)
    cfg.custom_imports = dict(imports=have + [m for m in modules if m not in have], allow_failed_imports=False)


def with_hooks(cfg: Config, live_dir: str | os.PathLike[str], max_iters: int, extra: Sequence[dict] = ()) -> None:
    """Replace the config's DVCLive and pruning hooks: one DVCLive hook writing to ``live_dir``, then ``extra``."""
    kept = [h for h in cfg.get("custom_hooks") or [] if h.get("type") not in OWN_HOOKS]
    live = dict(type="DVCLiveLoggerHook", interval=live_interval(max_iters), dir=os.fspath(live_dir))
    cfg.custom_hooks = kept + [live] + [dict(h) for h in extra]
    with_imports(cfg, ["cpd.mm.dvclive_hook"])


def with_loaders(cfg: Config, batch_size: int | None, workers: int | None, loaders: Sequence[str] = LOADERS) -> None:
    """Set the batch size (training loader only) and the worker count of the data loaders."""
    if batch_size is not None:
        cfg.train_dataloader.batch_size = batch_size
    if workers is not None:
        for name in loaders:
            if name in cfg:
                cfg[name].num_workers = workers
                cfg[name].persistent_workers = workers > 0


def with_data_root(cfg: Config, data_root: str) -> None:
    """Point every data loader's dataset at ``data_root`` (through the config's ``data_root`` knob if any)."""
    if "data_root" in (cfg.get("knobs") or {}):
        cfg.merge_from_dict(expand_knobs(cfg, {"data_root": data_root}))
        return
    cfg.data_root = data_root
    for name in LOADERS:
        dataset = cfg.get(name, {}).get("dataset")
        if isinstance(dataset, Mapping) and "data_root" in dataset:
            dataset["data_root"] = data_root


def with_schedule(cfg: Config, max_iters: int, val_interval: int, lr: float | None = None,
                  warmup_iters: int | None = None, decay: bool = True) -> None:
    """An iteration-based loop of ``max_iters``; with ``lr``, a linear warm-up then cosine decay (or constant).

    With ``lr``, iteration ``i`` of the warm-up trains at ``lr * (0.1 + 0.9 * i / warmup_iters)`` and
    iteration ``warmup_iters`` at ``lr`` itself, the peak; then the rate decays (cosine) to zero at
    ``max_iters``, or stays at ``lr`` when ``decay`` is false.  ``warmup_iters`` 0 (or None) starts at
    ``lr``.  Without ``lr`` the config's own schedule is kept: through its knobs if it has them, else
    every scheduler's ``end`` is clipped to ``max_iters`` (one that would start after it is dropped).

    Args:
        cfg: the config, changed in place.
        max_iters: iterations of the run.
        val_interval: iterations between validations.
        lr: the peak learning rate; None keeps the config's optimizer and schedule.
        warmup_iters: iterations of the linear warm-up (>= 0); with ``warmup_iters >= max_iters`` the
            whole run warms up and never reaches ``lr``.
        decay: cosine decay after the warm-up (else a constant rate).
    """
    knobs = cfg.get("knobs") or {}
    if lr is None and "max_iters" in knobs:
        cfg.merge_from_dict(expand_knobs(cfg, {"max_iters": max_iters, "val_interval": val_interval}
                                         if "val_interval" in knobs else {"max_iters": max_iters}))
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=val_interval)
    cfg.val_cfg, cfg.test_cfg = dict(type="ValLoop"), dict(type="TestLoop")
    if lr is None:
        kept = []
        for scheduler in cfg.get("param_scheduler") or []:
            if scheduler.get("by_epoch", True) is False and scheduler.get("begin", 0) >= max_iters:
                continue  # starts after the end (a warm-up longer than a short run)
            if isinstance(scheduler.get("end"), int) and scheduler["end"] > max_iters:
                scheduler["end"] = max_iters
            kept.append(scheduler)
        cfg.param_scheduler = kept
        return
    cfg.optim_wrapper.optimizer.lr = lr
    warm = min(warmup_iters or 0, max_iters)
    schedule = []
    if warm > 0:
        # mmengine's LinearLR reaches end_factor at its last step, iteration end - 1: ending at warm + 1
        # puts the peak at iteration warm.  (end=warm peaks one step early, and end=1 never leaves
        # start_factor, so a cosine starting there decayed from a tenth of the rate.)
        schedule.append(dict(type="LinearLR", start_factor=0.1, end_factor=1.0, by_epoch=False, begin=0,
                             end=warm + 1))
    if decay and max_iters > warm:
        # The cosine starts from the rate the warm-up left (lr) and reaches eta_min at max_iters.
        schedule.append(dict(type="CosineAnnealingLR", eta_min=0.0, by_epoch=False, begin=warm, end=max_iters))
    cfg.param_scheduler = schedule


def with_checkpoints(cfg: Config, interval: int) -> None:
    """Keep one mmengine checkpoint, every ``interval`` iterations and at the end (-1: none at all)."""
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=interval,
                                        max_keep_ckpts=1, save_last=interval > 0, save_best=None)


def _common(cfg: Config, work_dir: str | os.PathLike[str], seed: int, name: str) -> None:
    cfg.work_dir = os.fspath(work_dir)
    cfg.randomness = dict(seed=seed)
    cfg.load_from, cfg.resume = None, False
    cfg.experiment_name = f"{name}-{uuid.uuid4().hex[:8]}"
    cfg.log_processor = dict(by_epoch=False)


def baseline_config(params: TrainParams, data_root: str, work_dir: str | os.PathLike[str],
                    live_dir: str | os.PathLike[str]) -> Config:
    """The config that trains the baseline (the teacher) from ``params.config``.

    Raises:
        FileNotFoundError: the config cannot be found.
    """
    cfg = load_config(params.config)
    with_data_root(cfg, data_root)
    with_schedule(cfg, params.max_iters, params.val_interval)
    with_loaders(cfg, params.batch_size, params.workers)
    with_checkpoints(cfg, params.val_interval)
    with_hooks(cfg, live_dir, params.max_iters)
    _common(cfg, work_dir, params.seed, "train")
    return cfg


def prune_config(base: Config, params: PruneParams, baseline: str | os.PathLike[str], deps: str | os.PathLike[str],
                 out_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str],
                 live_dir: str | os.PathLike[str], latency: str | os.PathLike[str] | None = None) -> Config:
    """The config that prunes the baseline with the PruningHook up to the target, then stops.

    ``latency``: the latency model file (``cpd-latency``), needed with ``metric: latency``; the hook
    re-measures the cut model at each threshold as the file's ``info`` says it was measured.

    The hook writes ``thr_<t>.pth`` to ``out_dir`` at each threshold (``continue_finetune=False``: the
    fine-tuning is the distill stage's).  With ``params.kd`` the model is a :class:`cpd.mm.distiller.Distiller`
    whose student and teacher both start from ``baseline``, so the importance also sees the KD gradient.
    """
    cfg = copy.deepcopy(base)
    pruning = params.pruning
    max_iters = pruning.max_iterations
    if params.kd:
        cfg.model = ConfigDict(type="Distiller", student=copy.deepcopy(base.model), teacher=None,
                               teacher_checkpoint=os.fspath(baseline), student_checkpoint=os.fspath(baseline),
                               temperature=params.temperature, alpha=params.alpha)
        with_imports(cfg, ["cpd.mm.distiller"])
    with_schedule(cfg, max_iters, max_iters + 1, params.lr, params.warmup_iters, decay=False)
    with_loaders(cfg, params.batch_size, params.workers)
    with_checkpoints(cfg, -1)
    hook = dict(type="PruningHook", priority="LOWEST", prune_cfg=os.fspath(deps), continue_finetune=False,
                save_best=None, out_dir=os.fspath(out_dir), bn_batches=params.bn_batches, **pruning.to_dict())
    if pruning.metric == "latency":
        if latency is None:
            raise ValueError("prune.metric is 'latency': the prune config needs the latency model file")
        hook["latency"] = dict(file=os.fspath(latency))
    with_hooks(cfg, live_dir, max_iters, [hook])
    with_imports(cfg, ["cpd.mm.pruning_hook"])
    _common(cfg, work_dir, params.seed, "prune")
    if not params.kd:
        cfg.load_from = os.fspath(baseline)
    return cfg


def distill_config(base: Config, params: DistillParams, baseline: str | os.PathLike[str],
                   student: str | os.PathLike[str], work_dir: str | os.PathLike[str],
                   live_dir: str | os.PathLike[str]) -> Config:
    """The config that fine-tunes the pruned ``student`` file with KD from the ``baseline`` teacher."""
    cfg = copy.deepcopy(base)
    cfg.model = ConfigDict(type="Distiller", student=dict(type=pruned_type(base), checkpoint=os.fspath(student)),
                           teacher=copy.deepcopy(base.model), teacher_checkpoint=os.fspath(baseline),
                           temperature=params.temperature, alpha=params.alpha)
    with_imports(cfg, ["cpd.mm.pruned", "cpd.mm.distiller"])
    with_schedule(cfg, params.max_iters, params.val_interval, params.lr, params.warmup_iters)
    with_loaders(cfg, params.batch_size, params.workers)
    with_checkpoints(cfg, params.max_iters)
    with_hooks(cfg, live_dir, params.max_iters)
    _common(cfg, work_dir, params.seed, "distill")
    return cfg


def model_only(cfg: Config) -> Config:
    """The trained config without run state, its model without ``pretrained`` weights to load.

    Every later stage loads the baseline's weights, so an ImageNet checkpoint named in the backbone
    (``model.pretrained``, ``init_cfg=dict(type='Pretrained')``) is neither needed nor loaded.
    """
    out = copy.deepcopy(cfg)
    for key in ("work_dir", "load_from", "resume", "experiment_name", "launcher"):
        out.pop(key, None)
    _drop_checkpoints_(out.model)
    return out


def comb_segmentor(cfg: Config, params: CombParams) -> DependencyGraph:
    """Trace the config's model (random weights, CPU) at ``params.size`` or its crop size.

    Raises:
        ParamsError: ``params.exclude`` names nothing in the model.
        ValueError: the size does not fit the model.
    """
    model = build_model(cfg, input_size=params.size).eval()
    try:
        check_exclude(model, params.exclude)
    except ValueError as e:
        raise ParamsError(f"{params.NAME}.{e}") from None
    inputs = example_inputs(model, size=params.size)
    return comb(model, (inputs,), forward_fn=task_of(cfg).train_forward, exclude=params.exclude)


def dump_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as a Python config file (its parent created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(path))
    return path
