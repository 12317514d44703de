"""The latency sparsity a latency model's MACs line predicts for a cut of the masked model.

A :class:`~cpd.importance.latency.LatencyModel` with a ``macs_line`` ``b`` predicts the latency of a cut as
``baseline * (1 - b * s)``, ``s`` the share of the counted MACs of the deployed graph the cut saves, and with
an ``element_rate`` ``c`` as ``baseline * (1 - b * s - c * e)``, ``e`` the share of its counted elements.
Both are counted: the cut copy of the masked model (on the meta device where the model allows it, so no
arithmetic runs) through the deployment forward at the latency model's input shape, every MAC the graph
runs, attention products included, and every element its other operations write
(:func:`cpd.flops.count_work`).  The pruner asks for the same cut several times per step, so the last
counts are kept.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from cpd.flops import count_work
from cpd.importance.latency import LatencyModel
from cpd.surgery import cut_
from cpd.surgery.verify import CutTwin

#: counts kept (a pruning step asks for a handful of cuts, some twice)
CACHE = 32


class MacsLine:
    """``line(removed) -> latency sparsity`` of the cut ``{group: units}`` by the model's MACs line.

    Args:
        twin: builds the cut copies (the pruner's).
        latency: the latency model; its ``macs_line`` must be set.
        forward_fn: what the deployed graph runs (the task's inference forward; None: ``model(x)``).

    Raises:
        ValueError: the latency model has no MACs line, or the model's MACs at its input shape are zero.
    """

    def __init__(self, twin: CutTwin, latency: LatencyModel, forward_fn: Callable[..., Any] | None) -> None:
        if latency.macs_line is None:
            raise ValueError("this latency model has no MACs line (profile_latency with joint=True and macs=)")
        self.twin, self.slope, self.forward_fn = twin, float(latency.macs_line), forward_fn
        self.element_rate = float(latency.element_rate or 0.0)
        self.inputs = (torch.zeros(*latency.input_shape),)
        self.meta = twin.meta
        self._cache: OrderedDict[tuple, tuple[float, float]] = OrderedDict()
        self.full, self.full_elements = self.work({})
        if self.full <= 0:
            raise ValueError(f"the model counts no MACs at the latency model's input shape "
                             f"{list(latency.input_shape)}: the MACs line cannot apply")

    def count(self, removed: Mapping[int, Sequence[int]]) -> float:
        """The counted MACs of the cut copy at the latency model's input shape."""
        return self.work(removed)[0]

    def work(self, removed: Mapping[int, Sequence[int]]) -> tuple[float, float]:
        """``(MACs, elements)`` counted on the cut copy at the latency model's input shape."""
        key = tuple(sorted((int(g), tuple(int(u) for u in units)) for g, units in removed.items() if len(units)))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        cut = {g: list(u) for g, u in key}
        if self.meta:
            try:
                work = count_work(self.twin.cut(cut), self.twin.run_inputs(self.inputs), self.forward_fn)
            except Exception:  # noqa: BLE001 - the deployment forward may need real tensors: count those
                self.meta = False
        if not self.meta:
            model = self.twin.copy(meta=False)
            cut_(model, self.twin.graph, cut)
            device = next(iter(model.parameters()), torch.empty(0)).device
            work = count_work(model, tuple(x.to(device) for x in self.inputs), self.forward_fn)
        self._cache[key] = (float(work[0]), float(work[1]))
        if len(self._cache) > CACHE:
            self._cache.popitem(last=False)
        return self._cache[key]

    def __call__(self, removed: Mapping[int, Sequence[int]]) -> float:
        """``b * (1 - MACs(cut) / MACs(model)) + c * (1 - elements(cut) / elements(model))``: the latency
        sparsity the line predicts for the cut."""
        macs, elements = self.work(removed)
        saved = self.slope * (1.0 - macs / self.full)
        if self.element_rate and self.full_elements > 0:
            saved += self.element_rate * (1.0 - elements / self.full_elements)
        return saved

