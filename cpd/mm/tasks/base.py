"""What a vision task tells cpd about its models: the shape every task adapter has.

A :class:`Task` knows one OpenMMLab library (its registries, its default scope, its shipped
configs) and one kind of model. It answers the questions the callers (``cpd comb/check``, the
hook, the distiller, export) would otherwise answer by assuming a segmentor:

- how to build the model from a config offline on CPU (:meth:`Task.build_model`);
- which example batch it takes (:meth:`Task.default_size`, :meth:`Task.example_inputs`);
- which forward a trace must follow, through every head that training uses
  (:meth:`Task.train_forward`), and which of those outputs are the logits for distillation
  (:meth:`Task.logits`);
- which forward inference runs, the one to export (:meth:`Task.infer_forward`).

Adapters subclass :class:`Task`, set the class attributes and register an instance with
:func:`cpd.mm.tasks.register_task`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from mmengine.config import Config
from torch import nn

Size = tuple[int, int]

#: the attribute :meth:`Task.build_model` sets on a model: the ``(H, W)`` it was built for, which
#: :meth:`Task.default_size` (FLOPs, export, latency) then uses for it
INPUT_SIZE_ATTR = "cpd_input_size"

#: library -> the module registering prunable stand-ins for its modules (see cpd.surgery.adapters)
ADAPTER_MODULES = {"mmseg": "cpd.mm.adapters", "mmpretrain": "cpd.mm.pretrain_adapters"}


def load_adapters() -> None:
    """Register the prunable stand-ins of every OpenMMLab library imported so far.

    A segmentor may hold an mmpretrain backbone, so the stand-ins go by what is loaded, not by task.
    """
    for library, module in ADAPTER_MODULES.items():
        if library in sys.modules:
            importlib.import_module(module)


@dataclass
class DistillOutputs:
    """What one training forward gives the distiller (:meth:`Task.distill_forward`).

    Attributes:
        losses: the losses training would compute (empty without labels, e.g. for the teacher).
        logits: the class logits: per head (a segmentor, a classifier) or per feature level (a detector).
        features: the backbone's (or neck's) feature maps.
        boxes: a dense detector's box outputs per level (empty for other tasks).
        num_priors: priors (anchors) per location of the logits' and boxes' maps; their channels are
            grouped by prior.
        sigmoid: the logits score every class with a sigmoid (focal-loss detectors), not a softmax.
    """

    losses: dict[str, torch.Tensor]
    logits: list[torch.Tensor]
    features: Sequence[torch.Tensor]
    boxes: list[torch.Tensor] = field(default_factory=list)
    num_priors: int = 1
    sigmoid: bool = False


class Task:
    """One vision task over one OpenMMLab library.

    Attributes:
        name: the task's name (``"segmentation"``, ...).
        scope: the library's mmengine default scope (``"mmseg"``, ...).
        package: the package whose import fills the model registry (``"mmseg.models"``).
        registry_module: the module holding the library's ``MODELS`` registry.
        fallback_size: ``(H, W)`` of an example batch when the config names none.
    """

    name: ClassVar[str] = ""
    scope: ClassVar[str] = ""
    package: ClassVar[str] = ""
    registry_module: ClassVar[str] = ""
    fallback_size: ClassVar[Size] = (224, 224)

    def registry(self) -> Any:
        """Return the library's ``MODELS`` registry, filled, with its scope as the default scope.

        Returns:
            The registry.
        """
        from mmengine.registry import init_default_scope

        models = self._models()
        init_default_scope(self.scope)
        return models

    def _models(self) -> Any:
        """The filled ``MODELS`` registry, the default scope left as it is (for look-ups only)."""
        importlib.import_module(self.package)  # importing fills the registry
        return importlib.import_module(self.registry_module).MODELS

    def owns_config(self, cfg: Config) -> bool:
        """Tell whether ``cfg`` is a config of this task.

        Args:
            cfg: a full config with a ``model`` section.

        Returns:
            True when the config's default scope is this library's, or, with no default scope,
            when the model type is registered in this library.
        """
        scope = cfg.get("default_scope")
        if scope:
            return scope == self.scope
        kind = cfg.get("model", {}).get("type")
        if not isinstance(kind, str):
            return False
        prefix, _, bare = kind.rpartition(".")
        if prefix:
            return prefix == self.scope
        try:
            return self._models().get(bare) is not None
        except ModuleNotFoundError:
            return False

    def owns_model(self, model: nn.Module) -> bool:
        """Tell whether ``model`` was built by this task's library.

        Args:
            model: a built model.

        Returns:
            True when a class of the model's MRO comes from this library.
        """
        root = self.package.split(".")[0]
        return any(cls.__module__.split(".")[0] == root for cls in type(model).__mro__)

    def build_model(self, cfg: Config, input_size: Size | None = None) -> nn.Module:
        """Build the model of ``cfg`` on CPU, without any checkpoint, SyncBN made BN.

        Args:
            cfg: a full config of this task.
            input_size: when given, backbones with a fixed ``img_size`` are built for it.

        Returns:
            The model on CPU, in train mode.

        Raises:
            ValueError: ``input_size`` is not two positive integers.
        """
        from cpd.mm.build import model_config, sync_bn_to_bn_

        model_cfg = model_config(cfg, input_size, registry=self.registry())
        model = self.registry().build(model_cfg)
        load_adapters()
        sync_bn_to_bn_(model)
        setattr(model, INPUT_SIZE_ATTR, tuple(input_size) if input_size is not None else self.default_size(cfg))
        return model.to("cpu")

    def default_size(self, cfg_or_model: Config | nn.Module) -> Size:
        """The ``(H, W)`` of an example batch when none is asked for: the deployment input size.

        In order: the size a model was built for (:data:`INPUT_SIZE_ATTR`, set by :meth:`build_model`);
        a config's top-level ``input_size = (H, W)`` (any task: a config names its deployment size
        there when nothing else says it); what the task reads from the config or model
        (:meth:`declared_size`); else :attr:`fallback_size`.

        Args:
            cfg_or_model: a config of this task or a model it built.

        Returns:
            ``(H, W)``.
        """
        return self.stated_size(cfg_or_model) or self.fallback_size

    def stated_size(self, cfg_or_model: Config | nn.Module) -> Size | None:
        """:meth:`default_size` without the fallback: the size the model or config says, or None."""
        if isinstance(cfg_or_model, nn.Module):
            size = getattr(cfg_or_model, INPUT_SIZE_ATTR, None)
        else:
            size = cfg_or_model.get("input_size")
        size = size or self.declared_size(cfg_or_model)
        return (int(size[0]), int(size[1])) if size else None

    def declared_size(self, cfg_or_model: Config | nn.Module) -> Size | None:
        """The input size a config or model of this task declares itself, or None.

        This default reads the data preprocessor's fixed ``size`` (mmseg's ``SegDataPreProcessor``).
        """
        if isinstance(cfg_or_model, nn.Module):
            size = getattr(getattr(cfg_or_model, "data_preprocessor", None), "size", None)
        else:
            size = cfg_or_model.get("model", {}).get("data_preprocessor", {}).get("size")
        return tuple(size) if size else None

    def example_inputs(self, cfg_or_model: Config | nn.Module, size: Size | None = None,
                       batch: int = 2, seed: int = 0) -> torch.Tensor:
        """Make a random, already normalised image batch.

        Args:
            cfg_or_model: a config of this task or a model it built.
            size: ``(H, W)``; :meth:`default_size` when None.
            batch: batch size.
            seed: seed of the generator, so that calls are repeatable.

        Returns:
            A float tensor ``(batch, C, H, W)``.

        Raises:
            ValueError: ``size`` or ``batch`` is not positive.
        """
        from cpd.mm.build import check_size, input_channels

        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        h, w = check_size(tuple(size) if size is not None else self.default_size(cfg_or_model))
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(batch, input_channels(cfg_or_model), h, w, generator=generator)

    def train_forward(self, model: nn.Module, inputs: torch.Tensor) -> list[Any]:
        """Run the model through every head that training uses.

        Args:
            model: a model of this task.
            inputs: a normalised image batch ``(N, C, H, W)``.

        Returns:
            Every head's raw outputs as a list (of tensors, or of lists of tensors per
            feature level); :meth:`logits` picks the logits out of it.
        """
        raise NotImplementedError

    def logits(self, model: nn.Module, outputs: Sequence[Any]) -> list[torch.Tensor]:
        """Pick the logits for distillation out of :meth:`train_forward`'s outputs.

        Args:
            model: the model that produced them.
            outputs: what :meth:`train_forward` returned.

        Returns:
            The class logits (per head, or per feature level for detectors).
        """
        raise NotImplementedError

    def infer_forward(self, model: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the forward that inference runs (what to export).

        Args:
            model: a model of this task.
            inputs: a normalised image batch ``(N, C, H, W)``.

        Returns:
            The raw outputs inference post-processes, flattened.
        """
        raise NotImplementedError

    def distill_forward(self, model: nn.Module, inputs: torch.Tensor, data_samples: Any = None
                        ) -> DistillOutputs:
        """Run one training forward for distillation: the model's own losses, its logits, its features.

        One pass gives them all, so that the KD term sees the logits the losses were computed on.

        Args:
            model: a model of this task.
            inputs: a normalised image batch ``(N, C, H, W)``.
            data_samples: the batch's labels; None (a teacher) computes no loss.

        Returns:
            The losses training would compute (empty without ``data_samples``), the logits as
            :meth:`logits` picks them, the backbone's (or neck's) feature maps, and for a detector
            its box outputs.
        """
        raise NotImplementedError(f"the {self.name} task cannot be distilled yet")

    def output_modules(self, model: nn.Module, inputs: torch.Tensor) -> list[str]:
        """Name the layers nearest the outputs of :meth:`train_forward` (class logits, box maps).

        From every output, the autograd graph is walked back through parameter-free operations
        (a sum of two heads, a reshape) to the first operations that use a layer's parameters:
        those layers' output channels are what the task predicts. Comb finds them from the graph
        and keeps them whole; this names them, so that callers and tests can see it holds.

        Args:
            model: a model of this task.
            inputs: an example batch.

        Returns:
            Module names as in ``model.named_modules()``, in module order.
        """
        owner = {id(p): name for name, module in model.named_modules()
                 for p in module.parameters(recurse=False)}
        with torch.enable_grad():
            outputs = flat_tensors(self.train_forward(model, inputs), f"{self.name} forward")
        found: set[str] = set()
        seen: set[int] = set()
        stack = [out.grad_fn for out in outputs if out.grad_fn is not None]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            nexts = [n for n, _ in node.next_functions if n is not None]
            params = [owner[id(n.variable)] for n in nexts if id(getattr(n, "variable", None)) in owner]
            if params:
                found.update(params)
            else:
                stack.extend(nexts)
        return [name for name, _ in model.named_modules() if name in found]

    def __repr__(self) -> str:
        return f"<{self.name} task ({self.scope})>"


def flat_tensors(output: object, where: str) -> list[torch.Tensor]:
    """Flatten a head's output (a tensor, or nested lists/tuples/dicts of them).

    Args:
        output: what the head returned.
        where: the head's name, for the error.

    Returns:
        The tensors in order.

    Raises:
        TypeError: something in ``output`` is not a tensor.
    """
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flat_tensors(item, where)]
    if isinstance(output, Mapping):
        return [t for item in output.values() for t in flat_tensors(item, where)]
    raise TypeError(f"{where} returned {type(output).__name__}, expected tensors")
