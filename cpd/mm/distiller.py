"""``Distiller``: a model (segmentor, classifier, detector) that learns from its labels and from a frozen teacher.

Registered in mmseg's, mmpretrain's and mmdet's ``MODELS`` (``custom_imports = dict(imports=['cpd.mm.distiller'])``)::

    model = dict(
        type='Distiller',
        student=dict(type='EncoderDecoder', ...),           # or dict(type='PrunedSegmentor', checkpoint=...)
        teacher='configs/embedded/vit_digits.py',            # a config file, a model dict, or None: the student's
        teacher_checkpoint='work_dirs/vit_digits/best.pth',
        temperature=2.0, alpha=1.0,
        feature_loss=dict(weight=1.0, index=-1, pool=16))    # optional

The training loss is the student's own losses (a segmentor's decode and auxiliary heads, a classifier's
head) plus ``alpha * kd_kl_loss(student logits, teacher logits, T)`` (:mod:`cpd.distill.losses`) on the
logits of the student's task (:meth:`cpd.mm.tasks.Task.distill_forward`: pixel-wise for a segmentor,
the class scores for a classifier), plus
``weight * affinity_loss`` between the student's and the teacher's backbone features when
``feature_loss`` is set.  A dense detector (boxes among its outputs) is distilled instead on the class
scores and boxes of every level, and optionally on its neck's maps (``detection_kd``, see
:mod:`cpd.mm.detection_kd`).  The teacher runs without gradients in eval mode, is never updated and is
never pruned (:class:`cpd.mm.pruning_hook.PruningHook` prunes ``model.student``); both networks see the
images normalised by the student's data preprocessor.  Validation and testing run the student alone.
The student's type resolves in the current default scope (the config's library), as any model's does.
"""
from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.utils import import_modules_from_strings
from torch import nn

from cpd.mm.shim import install_mmcv_shim

install_mmcv_shim()

from mmseg.registry import MODELS  # noqa: E402

from cpd.distill import affinity_loss, kd_kl_loss  # noqa: E402
from cpd.mm.build import load_config, model_config  # noqa: E402
from cpd.mm.checkpoints import state_dict_of, state_mismatch  # noqa: E402
from cpd.mm.detection_kd import build_connectors, detection_kd_losses, detection_kd_options  # noqa: E402
from cpd.mm.pruned import PRUNED_TYPES  # noqa: E402
from cpd.mm.tasks import TASKS, Task, task_of  # noqa: E402


def scope_registry() -> Any:
    """The ``MODELS`` registry of the current default scope (mmseg's when none is set or it is no task's)."""
    current = DefaultScope.get_current_instance()
    name = current.scope_name if current is not None else None
    task = next((t for t in TASKS.values() if t.scope == name), None)
    return task.registry() if task is not None else MODELS

FEATURE_KEYS = frozenset({"weight", "index", "pool"})


def load_weights_(model: nn.Module, path: str | os.PathLike, what: str) -> None:
    """Load a checkpoint's weights into ``model`` strictly (a distiller's checkpoint gives its student).

    The file is read weights-only (:func:`cpd.mm.checkpoints.state_dict_of`); inside
    :func:`cpd.mm.checkpoints.safe_checkpoint_loading` the files it trusts are read in full.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is damaged or refused (:class:`cpd.safe_load.BadFileError`), or the weights
            do not fit ``model``.
    """
    state = state_dict_of(path, what)
    if state and all(k.startswith("student.") or k.startswith("teacher.") for k in state):
        state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    problem = state_mismatch(model, state)
    if problem:
        raise ValueError(f"Distiller: {what}={os.fspath(path)!r} does not fit the model: {problem}")
    model.load_state_dict(state, strict=True)


def build_teacher(teacher: Any, student_cfg: Any, checkpoint: str | os.PathLike | None,
                  task: Task | None = None) -> nn.Module:
    """Build the frozen teacher: from a config file, a model config, or (None) the student's config.

    A config file builds in its own task's library; a model dict (or the student's config) in the
    student's ``task`` (the current default scope's library when None).

    Raises:
        ValueError: the teacher cannot be derived (a student given as a module with ``teacher=None``),
            or its checkpoint does not fit it.
    """
    if teacher is None:
        if not isinstance(student_cfg, Mapping) or student_cfg.get("type") in PRUNED_TYPES:
            raise ValueError("Distiller: teacher=None means the student's config, but the student is not given as "
                             "an unpruned model config; pass teacher= a config file or model dict")
        cfg = Config(dict(model=copy.deepcopy(dict(student_cfg))))
    elif isinstance(teacher, (str, os.PathLike)):
        cfg = load_config(teacher)
        imports = (cfg.get("custom_imports") or {}).get("imports", [])
        if imports:
            import_modules_from_strings(imports)
        task = task_of(cfg)
    elif isinstance(teacher, Mapping):
        cfg = Config(dict(model=copy.deepcopy(dict(teacher))))
    else:
        raise ValueError(f"Distiller: teacher must be a config file, a model dict or None, got {type(teacher).__name__}")
    registry = task.registry() if task is not None else scope_registry()
    model = registry.build(model_config(cfg))
    if checkpoint is not None:
        load_weights_(model, checkpoint, "teacher_checkpoint")
    model.requires_grad_(False)
    return model.eval()


class Distiller(BaseModel):
    """A student trained with a frozen teacher's soft labels (see the module docstring).

    Args:
        student: the student's model config (an mmseg ``EncoderDecoder``, an mmpretrain ``ImageClassifier``,
            or a ``PrunedModel``).
        teacher: the teacher's model config, a config file, or None for the student's own config.
        teacher_checkpoint: the teacher's weights (an mmengine checkpoint or a state dict); None keeps
            its initial weights (only useful in tests).
        student_checkpoint: weights loaded into the student after it initialises (e.g. the teacher's, to
            prune a trained model); None: its own initialisation.  A resumed run loads its checkpoint after.
        temperature: softmax temperature ``T`` of the KD loss (> 0).
        alpha: weight of the KD loss (>= 0).
        feature_loss: None, or ``dict(weight=1.0, index=-1, pool=16)``: the affinity loss between the
            backbone feature maps at ``index`` (pooled to at most ``pool x pool`` positions).
        detection_kd: a dense detector's KD options (:func:`cpd.mm.detection_kd.detection_kd_options`; None:
            class scores by binary KL, boxes by L2 on the teacher's confident priors, no neck term).
        data_preprocessor: the runner passes the config's top-level ``data_preprocessor`` here; it is given to
            the student when the student's config has none (the distiller uses the student's).
        init_cfg: unused (the student initialises itself, the teacher is loaded).

    Raises:
        ValueError: a bad argument.
    """

    def __init__(self, student: Mapping[str, Any], teacher: Mapping[str, Any] | str | None = None,
                 teacher_checkpoint: str | os.PathLike | None = None,
                 student_checkpoint: str | os.PathLike | None = None, temperature: float = 1.0, alpha: float = 1.0,
                 feature_loss: Mapping[str, Any] | None = None,
                 detection_kd: Mapping[str, Any] | None = None, data_preprocessor: Any = None,
                 init_cfg: Any = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"Distiller: temperature={temperature!r} must be a number > 0")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"Distiller: alpha={alpha!r} must be a number >= 0")
        if feature_loss is not None:
            if not isinstance(feature_loss, Mapping) or set(feature_loss) - FEATURE_KEYS:
                raise ValueError(f"Distiller: feature_loss={feature_loss!r} must be None or a dict with keys "
                                 f"{sorted(FEATURE_KEYS)}")
            feature_loss = {"weight": 1.0, "index": -1, "pool": 16, **dict(feature_loss)}
        self.detection_kd = detection_kd_options(detection_kd)
        if not isinstance(student, Mapping):
            raise ValueError(f"Distiller: student must be a model config dict, got {type(student).__name__}")
        student = copy.deepcopy(student)
        if data_preprocessor is not None and student.get("type") not in PRUNED_TYPES:
            student.setdefault("data_preprocessor", data_preprocessor)
        self.student = scope_registry().build(student)
        try:
            self.task = task_of(self.student)
        except ValueError as e:
            raise ValueError(f"Distiller: {e}") from None
        if isinstance(getattr(self.student, "decode_head", None), nn.ModuleList):
            raise ValueError("Distiller: cascade segmentors (several decode heads) are not supported")
        self.teacher = build_teacher(teacher, student, teacher_checkpoint, self.task)
        # both networks see the student's normalisation; one preprocessor, shared
        self.data_preprocessor = self.student.data_preprocessor
        self.temperature, self.alpha, self.feature_loss = float(temperature), float(alpha), feature_loss
        self.student_checkpoint = None if student_checkpoint is None else os.fspath(student_checkpoint)
        self.connectors = self._connectors() if self.detection_kd["neck_weight"] > 0 else None

    def _connectors(self) -> nn.ModuleList:
        """The neck connectors of a detector, for the widths of the two networks as built (one probe batch)."""
        with torch.no_grad():
            inputs = self.task.example_inputs(self.student, batch=1)
            student, teacher = (self.task.distill_forward(net, inputs) for net in (self.student, self.teacher))
        if not student.boxes:
            raise ValueError(f"Distiller: detection_kd.neck_weight applies to dense detectors; the student is a "
                             f"{self.task.name} model")
        return build_connectors(student.features, teacher.features)

    def init_weights(self) -> None:
        """Initialise the student (then load ``student_checkpoint``); the teacher keeps its checkpoint.

        Raises:
            ValueError: ``student_checkpoint`` does not fit the student.
        """
        if hasattr(self.student, "init_weights"):
            self.student.init_weights()
        if self.student_checkpoint is not None:
            load_weights_(self.student, self.student_checkpoint, "student_checkpoint")

    def train(self, mode: bool = True) -> "Distiller":
        """Set the student's mode; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = "tensor") -> Any:
        """``loss``: student + distillation losses; ``predict`` / ``tensor``: the student alone."""
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.student.predict(inputs, data_samples)
        if mode == "tensor":
            return self.student(inputs, data_samples, mode="tensor")
        raise ValueError(f"Distiller: invalid mode {mode!r}; expected 'loss', 'predict' or 'tensor'")

    def loss(self, inputs: torch.Tensor, data_samples: Any) -> dict[str, torch.Tensor]:
        """The student's losses plus ``loss_kd`` (and ``loss_feat`` with a feature loss; a detector's
        ``loss_kd_box`` and ``loss_kd_neck``, see :mod:`cpd.mm.detection_kd`)."""
        out = self.task.distill_forward(self.student, inputs, data_samples)
        with torch.no_grad():
            t_out = self.task.distill_forward(self.teacher, inputs)
        losses = dict(out.losses)
        if out.boxes:  # a dense detector: its own KD terms, on every level
            losses.update(detection_kd_losses(out, t_out, self.detection_kd, self.temperature, self.alpha,
                                              self.connectors))
            return losses
        logits, t_logits = out.logits, t_out.logits
        if len(logits) != len(t_logits):
            raise ValueError(f"Distiller: the student gives {len(logits)} logits, the teacher {len(t_logits)}")
        kd = [kd_kl_loss(s, t, self.temperature) for s, t in zip(logits, t_logits)]
        losses["loss_kd"] = self.alpha * (kd[0] if len(kd) == 1 else sum(kd) / len(kd))
        if self.feature_loss is not None:
            i = self.feature_loss["index"]
            losses["loss_feat"] = self.feature_loss["weight"] * affinity_loss(
                out.features[i], t_out.features[i], pool=self.feature_loss["pool"])
        return losses


def _register() -> None:
    """Put :class:`Distiller` in the ``MODELS`` of mmseg, and of mmpretrain and mmdet if installed."""
    MODELS.register_module(module=Distiller)
    for library in ("mmpretrain", "mmdet"):  # optional libraries
        try:
            registry = importlib.import_module(f"{library}.registry").MODELS
        except ModuleNotFoundError:
            continue
        registry.register_module(module=Distiller)


_register()
