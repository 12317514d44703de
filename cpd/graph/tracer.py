"""Trace a model on CPU at the aten level and propagate channel labels through every operator.

The model runs once, for real, under a dispatch mode that sees every aten operator with its actual
arguments (any Python control flow, any reshape).  Heavy operators (convolutions, matrix products) are
run on the meta device only, so a large segmentation model traces in about the time its shapes take.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cpd.graph.fields import Field, align
from cpd.graph.forward import call_model
from cpd.graph.labels import AxisRef, LabelSpace
from cpd.graph.rules import rule_for

from cpd.graph import shape_only as _shape_only


class TraceContext:
    """What a propagation rule may read and write while one operator is traced."""

    def __init__(self, tracer: "LabelTracer", func: Any) -> None:
        self.tracer = tracer
        self.space: LabelSpace = tracer.space
        self.func = func

    @property
    def module(self) -> str:
        """Name of the innermost module being executed ('' at top level)."""
        return self.tracer.stack[-1][0] if self.tracer.stack else ""

    @property
    def module_obj(self) -> nn.Module | None:
        return self.tracer.stack[-1][1] if self.tracer.stack else None

    def where(self) -> str:
        """A human description of the current operator and module, for error messages."""
        mod = self.module_obj
        kind = type(mod).__name__ if mod is not None else "model"
        return f"aten.{self.func.overloadpacket.__name__} in '{self.module or '<top>'}' ({kind})"

    def fields(self, t: Any) -> list[Field]:
        """The label fields of tensor ``t`` (empty when it carries none)."""
        if not isinstance(t, torch.Tensor):
            return []
        entry = self.tracer.fields.get(id(t))
        if entry is None:
            return []
        self.tracer.reached.add(id(t))
        return [align(f, t.dim()) for f in entry[1]]

    @staticmethod
    def tensor_args(args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        """Every tensor among the arguments, in order."""
        leaves, _ = tree_flatten((list(args), kwargs))
        return [a for a in leaves if isinstance(a, torch.Tensor)]

    def attr_axis(self, attr: str, size: int) -> torch.Tensor | None:
        """Labels for an integer attribute of the current module that counts ``size`` channels or heads.

        Returns None when the current module has no such attribute with that value.
        """
        mod = self.module_obj
        if mod is None:
            return None
        value = getattr(mod, attr, None)
        if isinstance(value, (tuple, list, torch.Size)) and len(value) == 1:
            value = value[0]
        if not isinstance(value, int) or isinstance(value, bool) or value != size:
            return None
        return self.space.new_axis(AxisRef(f"{self.module}:{attr}", 0, "attr"), size)

    def size_attr_axes(self, size: int) -> list[torch.Tensor]:
        """Labels for every integer attribute (or list element) of the current module equal to ``size``.

        A reshape that spells a channel count literally usually takes it from such an attribute
        (``x.view(B, H, W, self.num_features[i])``); tying the attribute to the channels lets it follow a cut.
        """
        mod = self.module_obj
        if mod is None or type(mod).__module__.startswith("torch.nn") or size < 2:
            return []
        if not self.tracer.calls or self.tracer.calls[-1] not in ("view", "reshape"):
            return []  # a view made inside another operator, not spelled by the model's code
        refs = []
        for attr, value in vars(mod).items():
            if attr.startswith("_") or isinstance(value, bool):
                continue
            if isinstance(value, int) and value == size:
                refs.append(AxisRef(f"{self.module}:{attr}", 0, "attr"))
            elif isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
                hits = [i for i, v in enumerate(value) if v == size and not isinstance(v, bool)]
                if len(hits) == 1:
                    refs.append(AxisRef(f"{self.module}:{attr}[{hits[0]}]", 0, "attr"))
        if len(refs) != 1:
            # several attributes hold this number (num_heads == head_dim == 32): guessing could shrink the
            # wrong one; leave them all, and let the cut verification refuse the group if it breaks
            return []
        return [self.space.new_axis(refs[0], size)]


class LabelTracer(TorchDispatchMode):
    """Dispatch mode that keeps label fields beside every tensor the model computes."""

    def __init__(self, space: LabelSpace, shape_only: bool = True) -> None:
        super().__init__()
        self.space = space
        self.shape_only = shape_only
        self.fields: dict[int, tuple[Any, list[Field]]] = {}
        self.stack: list[tuple[str, nn.Module]] = []
        self.reached: set[int] = set()
        self.unknown_ops: dict[str, int] = {}
        #: names of the Python-level torch calls in progress (``view``, ``linear``, ...), outermost first.
        self.calls: list[str] = []
        #: True while the train-mode pass of :func:`run_traced` runs
        self.training_pass = False
        #: (id(tensor), axis, field) -> (the tensor, weakly; {0: first half, 1: second half} of the channel
        #: slices taken of it): see slice_rule
        self.halves: dict[tuple, tuple[Any, dict[int, torch.Tensor]]] = {}

    def set_fields(self, t: torch.Tensor, fields: list[Field], strong: bool = False) -> None:
        """Attach ``fields`` to ``t`` (replacing any it had)."""
        key = id(t)
        if not fields:
            self.fields.pop(key, None)
            return
        if strong:
            ref: Any = t
        else:
            ref = weakref.ref(t, lambda _r, k=key, s=self.fields: s.pop(k, None))
        self.fields[key] = (ref, fields)

    def _run(self, func: Any, args: tuple, kwargs: dict) -> Any:
        return _shape_only.call(func, args, kwargs, self.shape_only)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self._run(func, args, kwargs)
        ins = TraceContext.tensor_args(args, kwargs)
        if not any(id(t) in self.fields for t in ins):
            return out
        name = func.overloadpacket.__name__
        rule = rule_for(name) or rule_for(name.rstrip("_"))
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        ctx = TraceContext(self, func)
        if rule is None:
            self.unknown_ops[name] = self.unknown_ops.get(name, 0) + 1
            for t in ins:
                for f in ctx.fields(t):
                    self.space.block(f, f"operator {ctx.where()} has no propagation rule")
            return out
        result = rule(ctx, func, args, kwargs, outs)
        for o, fs in zip(outs, result):
            self.set_fields(o, [f for f in fs if f.dim() == o.dim()])
        return out


class CallStack(TorchFunctionMode):
    """Records which Python-level torch function is running, so rules can tell ``x.view(...)`` written in
    model code from a view that ``F.linear`` makes internally."""

    def __init__(self, tracer: LabelTracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.tracer.calls.append(getattr(func, "__name__", ""))
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.tracer.calls.pop()


def _module_hooks(model: nn.Module, tracer: LabelTracer) -> list[Any]:
    names = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        names.setdefault(id(mod), name)

    def pre(mod: nn.Module, _args: Any) -> None:
        tracer.stack.append((names.get(id(mod), type(mod).__name__), mod))

    def post(mod: nn.Module, _args: Any, _out: Any) -> None:
        if tracer.stack and tracer.stack[-1][1] is mod:
            tracer.stack.pop()

    return [nn.modules.module.register_module_forward_pre_hook(pre),
            nn.modules.module.register_module_forward_hook(post, always_call=True)]


def label_members(model: nn.Module, tracer: LabelTracer) -> dict[int, tuple[str, str]]:
    """Give every axis (of size > 1) of every parameter and floating buffer its own labels.

    Returns:
        ``id(tensor) -> (name, kind)`` for every labelled member.
    """
    members: dict[int, tuple[str, str]] = {}
    items = [(n, p, "param") for n, p in model.named_parameters()]
    items += [(n, b, "buffer") for n, b in model.named_buffers() if b.is_floating_point()]
    for name, t, kind in items:
        if id(t) in members:
            continue
        members[id(t)] = (name, kind)
        fields = []
        for d in range(t.dim()):
            if t.shape[d] > 1:
                labels = tracer.space.new_axis(AxisRef(name, d, kind), t.shape[d])
                shape = [1] * t.dim()
                shape[d] = t.shape[d]
                fields.append(labels.reshape(shape))
        tracer.set_fields(t, fields, strong=True)
    return members


def run_traced(model: nn.Module, tracer: LabelTracer, inputs: tuple[Any, ...],
               forward_fn: Callable[..., Any] | None = None,
               modes: tuple[bool, ...] = (True, False)) -> tuple[dict[int, tuple[str, str]], list[Any]]:
    """Label the members of ``model`` and run one forward per mode (train, then eval) under ``tracer``.

    The train pass reaches what only training uses (auxiliary branches, extra outputs); the eval pass is
    what is deployed.  Both feed the same label space.  Buffers (BN running statistics) are restored after
    the train pass, so the model is left exactly as it was.  Every run that must see the same labels (the
    trace, the masked reference) goes through here, so label numbering is identical between them.

    Returns:
        The labelled members and the outputs of each pass (None for a train pass that failed).
    """
    members = label_members(model, tracer)
    hooks = _module_hooks(model, tracer)
    was_training = model.training
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    outputs: list[Any] = []
    try:
        for train in modes:
            model.train(train)
            tracer.stack.clear()
            tracer.training_pass = train
            try:
                with torch.no_grad(), torch.random.fork_rng(devices=[]), CallStack(tracer), tracer:
                    torch.manual_seed(0)  # models that draw random numbers in forward draw the same ones
                    outputs.append(call_model(model, inputs, forward_fn))
            except Exception:
                if not train or len(modes) == 1:
                    raise
                outputs.append(None)  # a model that cannot run a train-mode forward on these inputs
            finally:
                if train:
                    with torch.no_grad():
                        for n, b in model.named_buffers():
                            if n in saved:
                                b.copy_(saved[n])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return members, outputs


def trace(model: nn.Module, example_inputs: tuple[Any, ...],
          forward_fn: Callable[..., Any] | None = None, shape_only: bool = True) -> tuple[LabelSpace, LabelTracer,
                                                                                             dict[int, tuple[str, str]]]:
    """Run ``forward_fn(model, *example_inputs)`` once under the label tracer.

    Args:
        model: the model; it is put in eval mode for the trace and restored afterwards.
        example_inputs: inputs of the forward call.
        forward_fn: how to call the model (default ``model(*inputs)``); return every output that matters.
        shape_only: skip the arithmetic of heavy operators (their values are never read by a rule).

    Returns:
        The label space with every fact recorded, the tracer, and the labelled members.
    """
    space = LabelSpace()
    tracer = LabelTracer(space, shape_only=shape_only)
    members, outputs = run_traced(model, tracer, example_inputs, forward_fn)
    for o in tree_flatten([o for o in outputs if o is not None])[0]:
        if isinstance(o, torch.Tensor):
            for f in tracer.fields.get(id(o), (None, []))[1]:
                space.block(f, "reaches a model output")
    return space, tracer, members
