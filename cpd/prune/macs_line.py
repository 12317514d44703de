"""The latency sparsity a latency model's MACs line predicts for a cut of the masked model.

A :class:`~cpd.importance.latency.LatencyModel` with a ``macs_line`` ``b`` predicts the latency of a cut as
``baseline * (1 - b * s)``, ``s`` the share of the counted MACs of the deployed graph the cut saves.  Here
``s`` is counted: the cut copy of the masked model (on the meta device where the model allows it, so no
arithmetic runs) through the deployment forward at the latency model's input shape, every MAC the graph
runs, attention products included (:func:`cpd.flops.count_macs`).  The pruner asks for the same cut
several times per step, so the last counts are kept.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from cpd.flops import count_macs
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
        self.inputs = (torch.zeros(*latency.input_shape),)
        self.meta = twin.meta
        self._cache: OrderedDict[tuple, float] = OrderedDict()
        self.full = self.count({})
        if self.full <= 0:
            raise ValueError(f"the model counts no MACs at the latency model's input shape "
                             f"{list(latency.input_shape)}: the MACs line cannot apply")

    def count(self, removed: Mapping[int, Sequence[int]]) -> float:
        """The counted MACs of the cut copy at the latency model's input shape."""
        key = tuple(sorted((int(g), tuple(int(u) for u in units)) for g, units in removed.items() if len(units)))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        cut = {g: list(u) for g, u in key}
        if self.meta:
            try:
                macs = float(count_macs(self.twin.cut(cut), self.twin.run_inputs(self.inputs), self.forward_fn))
            except Exception:  # noqa: BLE001 - the deployment forward may need real tensors: count those
                self.meta = False
        if not self.meta:
            model = self.twin.copy(meta=False)
            cut_(model, self.twin.graph, cut)
            device = next(iter(model.parameters()), torch.empty(0)).device
            macs = float(count_macs(model, tuple(x.to(device) for x in self.inputs), self.forward_fn))
        self._cache[key] = macs
        if len(self._cache) > CACHE:
            self._cache.popitem(last=False)
        return macs

    def __call__(self, removed: Mapping[int, Sequence[int]]) -> float:
        """``b * (1 - MACs(cut) / MACs(model))``: the latency sparsity the line predicts for the cut."""
        return self.slope * (1.0 - self.count(removed) / self.full)

