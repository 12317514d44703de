"""The label space of a trace: channel labels, the equalities and blocks between them, and blocked labels.

Every channel coordinate that the trace can see gets an integer *label* (0 means "no channel").
Labels come from member axes (one label per index of a parameter, buffer or attribute axis) or are
*coarse*: one label standing for a whole set of labels that must be removed together (an attention head
seen through a batched matmul, a GroupNorm group).  Tracing only records facts; `group.py` turns them
into groups and units at the end, with one connected-components pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class AxisRef:
    """One axis of one member: a parameter, a buffer or an integer module attribute.

    Attributes:
        name: ``named_parameters()``/``named_buffers()`` name, or ``"module.path:attr"`` for an attribute.
        dim: the axis of the tensor (0 for an attribute).
        kind: ``"param"``, ``"buffer"`` or ``"attr"``.
    """

    name: str
    dim: int
    kind: str = "param"


@dataclass
class LabelSpace:
    """Allocates labels and collects the facts that tie them together."""

    next_label: int = 1
    #: first label of each member axis, and its size: labels are ``start + index``.
    axes: dict[AxisRef, tuple[int, int]] = field(default_factory=dict)
    _eq_a: list[np.ndarray] = field(default_factory=list)
    _eq_b: list[np.ndarray] = field(default_factory=list)
    #: coarse label -> the labels it stands for.
    coarse: dict[int, np.ndarray] = field(default_factory=dict)
    _coarse_by_key: dict[bytes, int] = field(default_factory=dict)
    #: label -> why it cannot be pruned (first reason wins).
    blocked: dict[int, str] = field(default_factory=dict)
    #: reshapes that split a labelled axis into a grid: each an int array of labels, one axis per split dim.
    grids: list[np.ndarray] = field(default_factory=list)
    #: labels that a normalisation or a mean sees: removing them changes statistics, not just drops terms.
    normalized: set[int] = field(default_factory=set)

    def new_axis(self, ref: AxisRef, size: int) -> torch.Tensor:
        """Allocate ``size`` fresh labels for a member axis and return them as a 1-D tensor."""
        if ref in self.axes:
            start, n = self.axes[ref]
            return torch.arange(start, start + n, dtype=torch.int64)
        start = self.next_label
        self.next_label += size
        self.axes[ref] = (start, size)
        return torch.arange(start, start + size, dtype=torch.int64)

    def union(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Record that labels ``a[i]`` and ``b[i]`` name the same channel (zeros are ignored)."""
        a = a.reshape(-1)
        b = b.reshape(-1)
        keep = (a != 0) & (b != 0) & (a != b)
        if not bool(keep.any()):
            return
        pairs = torch.unique(torch.stack([a[keep], b[keep]], dim=1), dim=0)
        self._eq_a.append(pairs[:, 0].numpy())
        self._eq_b.append(pairs[:, 1].numpy())

    def coarse_label(self, members: torch.Tensor) -> int:
        """Return one label standing for the set ``members`` (all removed together), 0 if it is empty."""
        uniq = torch.unique(members[members != 0])
        if uniq.numel() == 0:
            return 0
        if uniq.numel() == 1:
            return int(uniq[0])
        key = uniq.numpy().tobytes()
        label = self._coarse_by_key.get(key)
        if label is None:
            label = self.next_label
            self.next_label += 1
            self._coarse_by_key[key] = label
            self.coarse[label] = uniq.numpy()
        return label

    def block(self, labels: torch.Tensor, reason: str) -> None:
        """Mark ``labels`` as not prunable, keeping the first reason given for each."""
        for label in torch.unique(labels.reshape(-1)).tolist():
            if label != 0 and label not in self.blocked:
                self.blocked[label] = reason

    def note_normalized(self, labels: torch.Tensor) -> None:
        """Record labels whose channels enter a normalisation statistic (LayerNorm, a mean over channels)."""
        self.normalized.update(int(v) for v in torch.unique(labels.reshape(-1)).tolist() if v != 0)

    def add_grid(self, grid: torch.Tensor) -> None:
        """Record a reshape that laid the labels of one axis out as a grid (e.g. channels -> heads x dims)."""
        self.grids.append(grid.numpy().copy())

    def equalities(self) -> tuple[np.ndarray, np.ndarray]:
        """All recorded equalities as two aligned arrays of labels."""
        if not self._eq_a:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return np.concatenate(self._eq_a), np.concatenate(self._eq_b)
