"""Train and evaluate mmseg and mmpretrain configs with mmengine's Runner (``tools/train.py``, ``tools/test.py``).

Knobs: a config may declare ``knobs = dict(name=['dotted.path', ...])`` next to top-level
variables of the same names. mmengine resolves such variables when it reads the file, so
``--cfg-options max_iters=500`` alone would change nothing else; here it also sets every listed
path (a path given explicitly in the options wins). ``configs/embedded/vit_digits.py`` declares
``data_root``, ``max_iters``, ``warmup_iters`` and ``val_interval`` this way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config

from cpd.mm.build import load_config
from cpd.mm.checkpoints import check_checkpoint, resume_file, safe_checkpoint_loading, trusted_in

LAUNCHERS = ("none", "pytorch", "slurm", "mpi")


def expand_knobs(cfg: Config, cfg_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Add the config paths that each knob in ``cfg_options`` stands for.

    Args:
        cfg: the config, read without options.
        cfg_options: dotted-key overrides, as given on the command line.

    Returns:
        The overrides plus, for each knob among them, every path the config lists for it.

    Raises:
        KeyError: a knob lists a path the config does not have.
    """
    options = dict(cfg_options or {})
    knobs = cfg.get("knobs") or {}
    for name, paths in knobs.items():
        if name not in options:
            continue
        for path in paths:
            _lookup(cfg, path)
            options.setdefault(path, options[name])
    return options


def train_config(
    config: str | os.PathLike[str] | Config,
    work_dir: str | os.PathLike[str] | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    launcher: str = "none",
) -> Config:
    """Read a config and apply what ``tools/train.py`` takes on the command line.

    Without CUDA, distributed runs use the ``gloo`` backend and a DDP wrapper without device ids,
    so ``tools/dist_train.sh`` also works on CPU machines (:func:`train` then also starts the
    process group itself: mmengine's launcher code would select a CUDA device first).

    Args:
        config: a config file, a shipped mmseg config name, or a parsed config (copied).
        work_dir: where logs and checkpoints go; else the config's ``work_dir``, else
            ``work_dirs/<config name>``.
        cfg_options: dotted-key overrides, knobs included (see :func:`expand_knobs`).
        resume: resume from the latest checkpoint in ``work_dir``.
        launcher: one of ``LAUNCHERS``.

    Returns:
        The config, ready for ``Runner.from_cfg``.

    Raises:
        ValueError: unknown ``launcher``.
        FileNotFoundError: the config cannot be found.
        KeyError: a knob lists a path the config does not have.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if isinstance(config, Config):
        cfg, name = config.copy(), Path(config.filename or "config").stem
    else:
        cfg, name = load_config(config), Path(config).stem
    cfg.merge_from_dict(expand_knobs(cfg, cfg_options))
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(Path("work_dirs") / name)
    cfg.resume = bool(resume)
    cfg.launcher = launcher
    if launcher != "none" and not torch.cuda.is_available():
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
        wrapper = cfg.get("model_wrapper_cfg") or {"type": "MMDistributedDataParallel"}
        wrapper.setdefault("device_ids", None)
        cfg.model_wrapper_cfg = wrapper
    return cfg


def train(
    config: str | os.PathLike[str] | Config,
    work_dir: str | os.PathLike[str] | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    launcher: str = "none",
    trusted: Iterable[str | os.PathLike[str]] = (),
) -> Any:
    """Train a config with mmengine's Runner.

    Every checkpoint the run reads (``load_from``, the one ``resume`` picks, a distiller's teacher and
    student) is read weights-only with :data:`cpd.mm.checkpoints.ALLOWLIST`, and checked before the
    Runner is built, so a bad file is one line before any log.

    Args:
        config, work_dir, cfg_options, resume, launcher: see :func:`train_config`.
        trusted: checkpoint files read in full even so (also the config's ``trusted_checkpoints``).

    Returns:
        The Runner after training (``runner.model`` is the trained model; the checkpoints and
        logs are in ``runner.work_dir``).

    Raises:
        FileNotFoundError, cpd.safe_load.BadFileError: a checkpoint the run would read is missing,
            damaged or refused (one line naming it).
    """
    from mmengine.runner import Runner

    cfg = train_config(config, work_dir, cfg_options, resume, launcher)
    trusted = [*trusted, *trusted_in(cfg)]
    check_run_inputs(cfg, trusted)
    _init_cpu_process_group(cfg)
    with safe_checkpoint_loading(trusted):
        runner = Runner.from_cfg(cfg)
        runner.train()
    return runner


def evaluate(
    config: str | os.PathLike[str] | Config,
    checkpoint: str | os.PathLike[str],
    work_dir: str | os.PathLike[str] | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    launcher: str = "none",
    trusted: Iterable[str | os.PathLike[str]] = (),
) -> dict[str, float]:
    """Evaluate a checkpoint on the config's test split with its test evaluator.

    Args:
        config, work_dir, cfg_options, launcher: see :func:`train_config`.
        checkpoint: the ``.pth`` file to load: an mmengine checkpoint, or a pruned-model file of the
            pruning hook (``thr_<x>.pth``, ``best_pruned.pth``), which is tested in place of the config's
            model (a distiller's student), without the config's PruningHook. Read weights-only
            (see :func:`train`).
        trusted: checkpoint files read in full even so (also the config's ``trusted_checkpoints``).

    Returns:
        The evaluator's metrics (mmseg reports ``mIoU``, ``aAcc``, ``mAcc`` in percent).

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        cpd.safe_load.BadFileError: ``checkpoint`` is damaged, not a checkpoint, or refused.
    """
    from mmengine.runner import Runner

    cfg = train_config(config, work_dir, cfg_options, launcher=launcher)
    trusted = [*trusted, *trusted_in(cfg)]
    check_checkpoint(checkpoint, "checkpoint", trusted)
    cfg.load_from = str(checkpoint)
    from cpd.mm.pruned import is_pruned_file

    if is_pruned_file(checkpoint):
        import cpd.mm.pruned  # noqa: F401  (registers PrunedModel in every library's MODELS)

        cfg.model = {"type": "PrunedModel", "checkpoint": str(checkpoint)}
        cfg.load_from = None
        cfg.custom_hooks = [h for h in cfg.get("custom_hooks") or [] if h.get("type") != "PruningHook"]
    check_run_inputs(cfg, trusted)
    _init_cpu_process_group(cfg)
    with safe_checkpoint_loading(trusted):
        runner = Runner.from_cfg(cfg)
        metrics = runner.test()
    return {key: _plain(value) for key, value in metrics.items()}


def check_run_inputs(cfg: Config, trusted: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse, before a Runner is built (and logs ~400 lines), the files a run of ``cfg`` could not use.

    Checks ``load_from``, the checkpoint ``resume`` picks in the work dir, a distiller's
    ``teacher_checkpoint`` / ``student_checkpoint``, a ``PrunedModel``'s ``checkpoint`` (they exist,
    are complete torch files, and hold only allowed globals; nothing is unpickled), and the
    PruningHook's dependency JSON (it parses and is a cpd-deps file of a readable version; whether it
    fits the model is checked by the hook, which has the model).

    Raises:
        FileNotFoundError, cpd.safe_load.BadFileError: one line naming the file and the key.
    """
    from cpd.graph.deps_io import graph_from_dict
    from cpd.safe_load import read_document

    files: list[tuple[str, Any]] = [("load_from", cfg.get("load_from"))]
    if cfg.get("resume"):
        files.append(("resume", resume_file(cfg.work_dir)))
    model = cfg.get("model") or {}
    for key in ("teacher_checkpoint", "student_checkpoint", "checkpoint"):
        files.append((f"model.{key}", model.get(key)))
    student = model.get("student")
    if isinstance(student, Mapping):
        files.append(("model.student.checkpoint", student.get("checkpoint")))
    for key, path in files:
        if isinstance(path, (str, os.PathLike)) and "://" not in os.fspath(path):
            check_checkpoint(path, key, trusted)
    for hook in cfg.get("custom_hooks") or []:
        deps = hook.get("prune_cfg") if hook.get("type") == "PruningHook" else None
        if isinstance(deps, (str, os.PathLike)):
            read_document(deps, "PruningHook prune_cfg (deps JSON)", graph_from_dict,
                          "a cpd-deps file written by `cpd comb` for this model")


def _init_cpu_process_group(cfg: Config) -> None:
    """Start a gloo process group for a torchrun launch without CUDA.

    mmengine's pytorch launcher calls ``torch.cuda.set_device`` before anything else, which
    fails on a CPU build of torch; the Runner skips its own set-up when a group already exists.
    """
    if cfg.launcher != "pytorch" or torch.cuda.is_available():
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=cfg.env_cfg.dist_cfg.backend)


def _plain(value: Any) -> Any:
    """A numpy or torch scalar as a Python number, so metrics serialise to JSON."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


def _lookup(cfg: Config, path: str) -> Any:
    """The value at a dotted path (list items by index); KeyError naming the path if missing."""
    node: Any = cfg
    for part in path.split("."):
        try:
            node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise KeyError(f"knob path {path!r} is not in the config (stopped at {part!r})") from None
    return node
