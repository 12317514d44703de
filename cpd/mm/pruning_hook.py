"""``PruningHook``: structured pruning inside any mmengine training run (a segmentor, a classifier, ...).

A config turns it on as the original did::

    custom_imports = dict(imports=['cpd.mm.pruning_hook'], allow_failed_imports=False)
    custom_hooks = [dict(type='PruningHook', priority='LOWEST', interval=50, prune_cfg='deps.json',
                         save_sparsity_thr=[0.4], continue_finetune=True)]

``prune_cfg`` is the dependency JSON of the model being trained (``cpd comb CONFIG --out deps.json``,
made at the config's crop size), or None to comb the model when training starts (a batch of 2 at the
data preprocessor's size).  The model's task (:func:`cpd.mm.tasks.task_of`) says which forward the trace
and the pruner follow (every head that training uses) and which example batch they take.  With a
:class:`cpd.mm.distiller.Distiller` only the student is pruned, and
the JSON names the student's parameters (``cpd comb`` on the student's config).

Lifecycle:

1. *Masked pruning.*  After every optimizer step the gradients (the loss's, with distillation the KD
   term's too) are added to the importance, through a step pre-hook on the optimizer: mmengine's
   ``OptimWrapper.update_params`` clears them before any ``after_train_iter`` hook runs (with
   ``calibration_dataloader``, those of one batch of it instead: :mod:`cpd.mm.calibration`).  Every
   ``interval`` optimizer steps the least important units are masked (:class:`cpd.prune.Pruner`); the
   masked model computes what the cut model would, so shapes, the optimizer and DDP stay as they are.
2. *Thresholds.*  When the sparsity reaches a threshold of ``save_sparsity_thr`` the cut model and its
   plan are written to ``<work_dir>/thr_<x>.pth`` (see :mod:`cpd.mm.pruned`: loadable from the file alone);
   with ``bn_batches``, its batch norm statistics are first re-estimated on that many training batches
   (:mod:`cpd.mm.batch_norm`).
3. *After the last threshold.*  ``continue_finetune=True``: the model is cut in place, the optimizer's
   parameters are swapped for the cut ones with their state sliced alike, the DDP wrapper is rebuilt,
   and training goes on with the structure fixed; after each validation the best pruned model by
   ``save_best`` is written to ``<work_dir>/best_pruned.pth``.  ``continue_finetune=False``: the train
   loop is asked to stop (``train_loop.stop_training``), and the run ends normally.

State (the pruner's masks and saliencies, thresholds saved or due, whether the model was cut, the best
score) is written into every checkpoint and read back in ``after_load_checkpoint``, which mmengine calls
before the weights are loaded: a cut model is cut again there, so ``--resume`` loads the pruned weights
and optimizer state into the right shapes and continues to the same result.

Under DDP the saliencies are averaged over ranks before each pruning step and the ranks check that they
removed the same units (:mod:`cpd.mm.dist_sync`).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, print_log
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS

from cpd.combing import comb
from cpd.files import DocKind
from cpd.graph.deps_io import graph_to_dict, load_deps
from cpd.graph.group import DependencyGraph
from cpd.mm.batch_norm import reestimate_on_training_data_
from cpd.mm.calibration import CalibrationBatches
from cpd.mm.dist_sync import average_saliency_, check_same_, digest, removed_digest_input
from cpd.mm.latency import LatencyOptions, hook_latency
from cpd.mm.pruned import save_pruned_model
from cpd.mm.rebuild import prune_target, remap_optimizer_, rewrap_, unwrap
from cpd.mm.tasks import TASKS, Task, task_of
from cpd.mm.tasks.base import INPUT_SIZE_ATTR
from cpd.prune import PruneConfig, Pruner
from cpd.prune.batch_norm import batch_norms
from cpd.prune.calibration import accumulate_on
from cpd.surgery import kept_slices

#: key of the hook's state in mmengine checkpoints.
STATE_KEY = "cpd_pruning"
HOOK_STATE = DocKind("cpd-pruning-hook", 1, "PruningHook state")
RULES = ("greater", "less")
#: what ``save_best='main'`` compares, per task (the first metric of the evaluator for any other task)
MAIN_METRICS = {"segmentation": "mIoU", "classification": "accuracy/top1", "detection": "coco/bbox_mAP"}


def task_of_model(model: torch.nn.Module) -> Task:
    """The task of ``model``; a model of no known library (a plain wrapper) is traced as a segmentor, as before."""
    try:
        return task_of(model)
    except ValueError:
        return TASKS["segmentation"]


def threshold_name(t: float) -> str:
    """File name of the model saved at sparsity threshold ``t`` (``thr_0.4.pth``)."""
    return f"thr_{t:g}.pth"


@HOOKS.register_module()
class PruningHook(Hook):
    """Prune the model (a distiller's student) while it trains; see the module docstring.

    The pruning options are data for :class:`cpd.prune.PruneConfig`, which validates them (as mmengine's
    ``EMAHook`` hands its options to the model it builds): ``interval``, ``thresholds`` (or the original's
    name ``save_sparsity_thr``), ``criterion``, ``metric``, ``round_to``, ``step_fraction``, ``min_keep``,
    ``seed``; see :class:`cpd.prune.PruneConfig` for each.  The hook's own arguments:

    Args:
        prune_cfg: path of the model's dependency JSON (``cpd comb``), or None to comb it at the start.
        continue_finetune: after the target, cut the model and keep training it (True) or stop (False).
        exclude: parameter or module names never pruned (used when combing, ``prune_cfg=None``).
        save_best: validation metric that picks ``best_pruned.pth`` while fine-tuning the cut model;
            ``'main'`` (the default): the task's main metric (:data:`MAIN_METRICS`: ``mIoU`` for a
            segmentor, ``accuracy/top1`` for a classifier); ``'auto'``: the evaluator's first metric;
            None: do not save it.
        rule: ``'greater'`` or ``'less'``: which ``save_best`` values are better.
        out_dir: where the ``.pth`` files go (default: the runner's work dir).
        latency: with ``metric='latency'``: ``dict(file=<latency model JSON>, threads=1, warmup=5, runs=40,
            rounds=4, measure=True, exporter='dynamo')`` (:class:`cpd.mm.latency.LatencyOptions`): the cut
            model's inference forward is re-measured at each threshold on the file's runtime and input shape,
            exported as the export stage exports it.
        calibration_dataloader: an mmengine dataloader config (written as ``val_dataloader`` is, on data
            training never sees): the importance is scored on its batches, one per optimizer step, instead
            of the training batches (:mod:`cpd.mm.calibration`); for a model that has memorised its training
            set, whose training gradients are next to nothing.  None (the default): the training batches.
        bn_batches: re-estimate the batch norm statistics of every saved cut model on this many batches of
            the run's training data (:mod:`cpd.mm.batch_norm`; the model trained on is left alone); 0 (the
            default): save them as training left them, which right after a pruning step are the statistics
            of the model before it.
        **pruning: the :class:`cpd.prune.PruneConfig` options above.

    Raises:
        ValueError: a bad argument (the message names it, its value and what is allowed).
        FileNotFoundError: ``prune_cfg`` does not exist.
    """

    priority = "LOWEST"

    def __init__(self, prune_cfg: str | os.PathLike | None = None, continue_finetune: bool = True,
                 exclude: Sequence[str] = (), save_best: str | None = "main", rule: str = "greater",
                 out_dir: str | os.PathLike | None = None, latency: Mapping[str, Any] | None = None,
                 calibration_dataloader: Mapping[str, Any] | None = None, bn_batches: int = 0,
                 **pruning: Any) -> None:
        try:
            self.config = PruneConfig.from_dict(pruning, aliases=PruneConfig.ALIASES)
        except ValueError as e:
            raise ValueError(f"PruningHook: {e}") from None
        if not isinstance(continue_finetune, bool):
            raise ValueError(f"PruningHook: continue_finetune={continue_finetune!r} must be True or False")
        if prune_cfg is not None:
            if not isinstance(prune_cfg, (str, os.PathLike)) or not os.fspath(prune_cfg):
                raise ValueError(f"PruningHook: prune_cfg={prune_cfg!r} must be the path of a dependency JSON "
                                 "or None (comb the model when training starts)")
            if not Path(prune_cfg).is_file():
                raise FileNotFoundError(f"PruningHook: prune_cfg={os.fspath(prune_cfg)!r} does not exist; make it "
                                        "with `cpd comb CONFIG --out deps.json`, or pass prune_cfg=None")
        if isinstance(exclude, str) or not all(isinstance(e, str) for e in exclude):
            raise ValueError(f"PruningHook: exclude={exclude!r} must be a list of parameter or module names")
        if exclude and prune_cfg is not None:
            raise ValueError(f"PruningHook: exclude={list(exclude)!r} applies when the hook combs the model "
                             "(prune_cfg=None); with a dependency JSON, pass --exclude to `cpd comb` instead")
        if save_best is not None and (not isinstance(save_best, str) or not save_best):
            raise ValueError(f"PruningHook: save_best={save_best!r} must be a metric name, 'main', 'auto' or None")
        if rule not in RULES:
            raise ValueError(f"PruningHook: rule={rule!r} must be one of {RULES}")
        if (self.config.metric == "latency") != (latency is not None):
            raise ValueError(f"PruningHook: latency={latency!r} with metric={self.config.metric!r}: metric='latency' "
                             "needs latency=dict(file=<latency model JSON>, ...), and only it takes one")
        try:
            #: how the latency metric re-measures (None unless metric='latency').
            self.latency = None if latency is None else LatencyOptions.from_dict(latency)
        except ValueError as e:
            raise ValueError(f"PruningHook: {e}") from None
        if self.latency is not None and not Path(self.latency.file).is_file():
            raise FileNotFoundError(f"PruningHook: latency.file={os.fspath(self.latency.file)!r} does not exist; "
                                    "build it with the pipeline's latency stage (cpd.prune.latency.profile_latency)")
        if calibration_dataloader is not None and not (isinstance(calibration_dataloader, Mapping)
                                                       and "dataset" in calibration_dataloader):
            raise ValueError(f"PruningHook: calibration_dataloader={calibration_dataloader!r} must be a dataloader "
                             "config with a 'dataset' (as val_dataloader is written), or None")
        self.calibration_cfg = None if calibration_dataloader is None else dict(calibration_dataloader)
        if isinstance(bn_batches, bool) or not isinstance(bn_batches, int) or bn_batches < 0:
            raise ValueError(f"PruningHook: bn_batches={bn_batches!r} must be a whole number of training batches, "
                             "0 or more (0: save the batch norm statistics as training left them)")
        self.bn_batches = bn_batches
        self.calibration: CalibrationBatches | None = None
        #: the dependency JSON (the original's ``prune_cfg``), or None.
        self.deps_path = None if prune_cfg is None else os.fspath(prune_cfg)
        self.continue_finetune = continue_finetune
        self.exclude = tuple(exclude)
        self.save_best, self.rule = save_best, rule
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        self.pruner: Pruner | None = None
        self.graph: DependencyGraph | None = None
        self.plan: dict | None = None
        self.pending: list[float] = []
        self.saved: list[float] = []
        self.best: dict[str, Any] = {}
        self.task: Task | None = None
        self._handles: list[Any] = []

    @property
    def materialized(self) -> bool:
        """Whether the model was cut (the fine-tuning phase)."""
        return self.pruner is not None and self.pruner.materialized

    # -- set-up -------------------------------------------------------------------------------------
    def before_run(self, runner: Any) -> None:
        """Read ``prune_cfg`` and check it was made for this model, before any time is spent training."""
        if self.deps_path is not None and self.graph is None:
            try:
                self.graph = load_deps(self.deps_path, prune_target(runner.model))
            except ValueError as e:
                raise ValueError(f"PruningHook: prune_cfg={self.deps_path!r}: {e}") from None

    def _setup(self, runner: Any) -> Pruner:
        """Build the pruner on the (student) model once; every rank must build the same one."""
        if self.pruner is not None:
            return self.pruner
        model = prune_target(runner.model)
        self.task = task_of_model(model)
        size = self.task.stated_size(runner.cfg)
        if size and getattr(model, INPUT_SIZE_ATTR, None) is None:  # the runner built it: say what the config says
            setattr(model, INPUT_SIZE_ATTR, size)
        device = next(model.parameters()).device
        if self.graph is None and self.deps_path is not None:
            self.before_run(runner)
        if self.graph is not None and self.graph.input_shapes:
            shape = self.graph.input_shapes[0]
            inputs = self.task.example_inputs(model, size=tuple(shape[2:]), batch=shape[0]).to(device)
        else:
            inputs = self.task.example_inputs(model, batch=2).to(device)
        if self.graph is None:
            print_log(f"PruningHook: combing the model on a {list(inputs.shape)} batch", logger="current")
            self.graph = comb(model, (inputs,), forward_fn=self.task.train_forward, exclude=self.exclude)
        check_same_("the dependency graph", digest(graph_to_dict(self.graph)))
        lm, measure = (None, None) if self.latency is None else hook_latency(model, self.task.infer_forward,
                                                                              self.graph, self.latency)
        self.pruner = Pruner(model, (inputs,), self.config, forward_fn=self.task.train_forward, graph=self.graph,
                             latency=lm, measure=measure, latency_forward=self.task.infer_forward)
        # one decision on every rank: the saliency is averaged over the ranks before each step ranks it
        self.pruner.register_prune_pre_hook(average_saliency_)
        print_log(f"PruningHook: {len(self.pruner.groups)} prunable groups; pruning to "
                  f"{list(self.config.thresholds)} {self.config.metric} sparsity with {self.config.criterion!r} "
                  f"every {self.config.interval} steps", logger="current")
        return self.pruner

    def before_train(self, runner: Any) -> None:
        """Build the pruner (unless a resumed checkpoint did), hook the optimizer, finish what a checkpoint left due."""
        pruner = self._setup(runner)
        if not pruner.materialized:
            if self.calibration_cfg is not None and self.calibration is None:
                self.calibration = CalibrationBatches(runner, self.calibration_cfg)
            self._attach(runner)
        self._flush(runner)

    def _attach(self, runner: Any) -> None:
        if self._handles:
            return
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, OptimWrapperDict) or not isinstance(wrapper, OptimWrapper):
            raise ValueError(f"PruningHook needs a single OptimWrapper, got {type(wrapper).__name__}")
        optimizer = wrapper.optimizer
        self._handles = [optimizer.register_step_pre_hook(self._before_step),
                         optimizer.register_step_post_hook(self._after_step)]

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- every optimizer step -----------------------------------------------------------------------
    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Add this step's gradients to the importance (they are gone by ``after_train_iter``), or those of
        the calibration batch of this step."""
        pruner = self.pruner
        if pruner.done:
            return
        if self.calibration is None:
            pruner.accumulate()
        else:
            index = pruner.iteration
            accumulate_on(pruner, lambda: self.calibration.loss(index), keep=self.calibration.model)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Re-zero the masked slices; every ``interval`` steps, prune (one decision on every rank)."""
        pruner = self.pruner
        event = pruner.step()
        MessageHub.get_current_instance().update_scalar("train/sparsity", float(pruner.sparsity))
        if event is None:
            return
        check_same_("the units removed by the pruning step", removed_digest_input(pruner.removed(), pruner.sparsity))
        self.pending.extend(event.crossed)
        units = sum(len(u) for u in event.removed.values())
        print_log(f"PruningHook: step {event.iteration}: removed {units} units from {len(event.removed)} groups "
                  f"({event.batches} batches scored); {self.config.metric} sparsity {event.sparsity:.4f}"
                  + (f" (predicted {event.predicted:.4f})" if event.predicted is not None else "")
                  + (" (target reached)" if event.done else ""), logger="current")

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        """Save the models of thresholds just reached; after the last one, cut and fine-tune, or stop."""
        self._flush(runner)

    def _flush(self, runner: Any) -> None:
        pruner = self.pruner
        for t in self.pending:
            self._save(runner, threshold_name(t))
            self.saved.append(t)
        self.pending = []
        if pruner is None or not pruner.done or pruner.materialized:
            return
        missed = [t for t in self.config.thresholds if t not in self.saved]
        if missed:
            print_log(f"PruningHook: no group can lose another unit at {pruner.sparsity:.4f} sparsity; thresholds "
                      f"{missed} were not reached", logger="current", level=30)
        if self.continue_finetune:
            self._materialize(runner)
        elif getattr(runner, "train_loop", None) is not None and hasattr(runner.train_loop, "stop_training"):
            print_log("PruningHook: pruning is over and continue_finetune=False: training stops", logger="current")
            runner.train_loop.stop_training = True

    def _materialize(self, runner: Any) -> None:
        """Cut the model in place and make the optimizer and the DDP wrapper follow."""
        pruner = self.pruner
        model = prune_target(runner.model)
        old = dict(model.named_parameters())
        cuts = kept_slices(pruner.graph, pruner.removed())
        self.plan = pruner.materialize_()
        self._detach()
        wrapper = getattr(runner, "optim_wrapper", None)
        if isinstance(wrapper, OptimWrapper):
            remap_optimizer_(wrapper.optimizer, old, dict(model.named_parameters()), cuts)
        rewrap_(runner)
        print_log(f"PruningHook: the model is cut to {pruner.sparsity:.4f} {self.config.metric} sparsity "
                  f"({sum(p.numel() for p in model.parameters())} parameters); fine-tuning it", logger="current")

    # -- saving -------------------------------------------------------------------------------------
    def _save(self, runner: Any, name: str) -> None:
        """Write the cut (student) model and its plan as ``name`` (main process only)."""
        if not is_main_process():
            return
        if self.materialized:
            model, plan = prune_target(runner.model), self.plan
            if self.bn_batches and batch_norms(model):
                model = copy.deepcopy(model)
        else:
            model, plan = self.pruner.export()
        if reestimate_on_training_data_(model, runner, self.bn_batches):
            print_log(f"PruningHook: batch norm statistics of {name} re-estimated on {self.bn_batches} training "
                      "batches", logger="current")
        cfg = runner.cfg
        distilling = isinstance(getattr(unwrap(runner.model), "student", None), torch.nn.Module)
        model_cfg = cfg.model.get("student") if distilling else cfg.model
        imports = (cfg.get("custom_imports") or {}).get("imports", [])
        imports = [imports] if isinstance(imports, str) else list(imports)
        path = Path(self.out_dir or runner.work_dir) / name
        save_pruned_model(model, plan, path, model_cfg=model_cfg if isinstance(model_cfg, Mapping) else None,
                          custom_imports=imports, scope=cfg.get("default_scope"),
                          input_size=self.task.stated_size(cfg))
        print_log(f"PruningHook: saved {path}", logger="current")

    def after_val_epoch(self, runner: Any, metrics: Mapping[str, float] | None = None) -> None:
        """While fine-tuning the cut model, keep its best validation result as ``best_pruned.pth``."""
        if not self.materialized or not self.continue_finetune or self.save_best is None or not metrics:
            return
        key = self.save_best
        if key == "main":
            key = MAIN_METRICS.get(self.task.name if self.task else "", "auto")
        if key == "auto":
            key = next(iter(metrics))
        if key not in metrics:
            raise KeyError(f"PruningHook: save_best={self.save_best!r} is not among the validation metrics "
                           f"{sorted(metrics)}")
        score = float(metrics[key])
        best = self.best.get("score")
        if best is not None and not (score > best if self.rule == "greater" else score < best):
            return
        self.best = {"metric": key, "score": score, "iter": int(runner.iter)}
        self._save(runner, "best_pruned.pth")

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The hook's state: the pruner's, whether the model is cut, thresholds saved and due, the best score."""
        return {**HOOK_STATE.header(), "pruner": self.pruner.state_dict() if self.pruner else None,
                "materialized": self.materialized, "pending": list(self.pending), "saved": list(self.saved),
                "best": dict(self.best)}

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Store the hook's state in the checkpoint."""
        checkpoint[STATE_KEY] = self.state_dict()

    def after_load_checkpoint(self, runner: Any, checkpoint: Mapping[str, Any]) -> None:
        """Restore the hook's state before the weights load; a cut model is cut again so the weights fit.

        Raises:
            ValueError: the state is not this hook's, or was saved for another model or pruning setup.
        """
        state = checkpoint.get(STATE_KEY)
        if state is None:
            return
        HOOK_STATE.check(state, f"checkpoint entry {STATE_KEY!r}")
        pruner = self._setup(runner)
        if pruner.materialized:
            raise ValueError("PruningHook: the model was already cut when a checkpoint was loaded; load "
                             "checkpoints before training starts")
        if state["pruner"] is not None:
            pruner.load_state_dict(state["pruner"])
        self.pending = [float(t) for t in state["pending"]]
        self.saved = [float(t) for t in state["saved"]]
        self.best = dict(state["best"])
        if state["materialized"]:
            self._materialize(runner)

    def after_run(self, runner: Any) -> None:
        """Remove the optimizer hooks."""
        self._detach()
