"""A latency model: what each group's width costs in measured time on one runtime, at one input size.

Parameters and MACs are counted; latency must be measured.  A :class:`LatencyModel` holds, per prunable
group, the measured latency of the whole model with only that group cut to a few widths (the other groups
whole), on a named runtime (``onnxruntime-cpu``, ``torch-eager``, ...) at the deployment input shape and
batch.  From it (see docs/pruning.md):

- ``t_g(w)``: the group's curve, piecewise-linear through its measured points (the last one: the full
  width ``W_g`` at the baseline) after making them non-decreasing in the width (a narrower layer is never
  slower; what the noise says otherwise is pooled away);
- the predicted latency of a model whose groups keep widths ``w_g``:
  ``T(w) = baseline - k * o(w) * sum_g (t_g(W_g) - t_g(w_g))`` (``T(W) = baseline``);
- the cost of a unit of ``c`` channels in a group now ``w`` wide: ``k * m_u * (t_g(w) - t_g(w - c))``;
- with a *MACs line* ``b`` (fitted on whole-model cuts), the predicted latency is instead
  ``T = baseline * (1 - b * s)``, ``s`` the share of the *counted* MACs the cut saves: every MAC the
  deployed graph runs at the deployment input (:func:`cpd.flops.count_macs` on the cut model), attention
  products included.  The curves still give the unit costs (which units go first); the line says how far
  the whole cut has got;
- with an *element rate* ``c`` beside it (fitted with ``b`` on every cut the profile timed, the single-group
  cuts and the whole-model ones), ``T = baseline * (1 - b * s - c * e)``, ``e`` the share of the counted
  *elements* the cut saves (:func:`cpd.flops.count_work`: outputs of every operation that is not a product
  or a view, the softmax, norms and activations a MAC count does not see).

``o(w)``, the *overlap*, is what the sum of single-group savings counts twice when several groups are cut
at once: a convolution between two cut groups loses ``1 - (1 - a)(1 - b)`` of its work, not ``a + b``.  It
is the MACs the whole cut saves over the sum of the MACs each group's cut saves alone, computed from the
model's structure by the caller (:meth:`cpd.importance.CostModel.overlap`; ``m_u`` is the same ratio for
one more unit).  ``k``, the *interaction*, is what is left: measured savings of whole-model cuts over
``o * additive`` (cuts that together free the caches, or work MACs do not count), fitted when the model is
built.  A model whose ``overlap`` is ``"none"`` (built without MACs) was fitted with ``o = 1`` and
predicts with it.

Why the line predicts the total: a group's saving measured alone is a small difference of two noisy
timings, and twenty of them summed carry twenty errors, while a whole-model cut saves far more than the
noise.  And what shrinks the time is work the graph runs, not only the parameters' MACs: the whole-model
cuts shrink the attention heads, and with them ``q @ k``, ``attn @ v`` and the softmax, which multiply no
parameter.  On the stored 512x512 benchmark the summed curves missed DeiT-S/UperNet at 2x by +29%
(Swin-T/UperNet by -15%); pruned with the line fitted on the same profile's whole-model cuts, DeiT-S/UperNet
read +8% (docs/benchmarks.md).  A second rate is needed where the pruner's cuts are not like the uniform
ones: a pruned DeiT-S/UperNet keeps its attention heads whole, so it saves 8-17% of the elements (half of
them the softmax's) where the uniform cuts save 27-80%, and one slope fitted on uniform cuts predicts it 12%
too fast; the element rate comes from the single-group cuts, which save MACs and elements in other
proportions.  The pruner still re-measures the whole cut model at each threshold and corrects
what is left.  Widths are in channels (:func:`cpd.importance.cost.channels_per_unit`; a head counts its head
dimension).

File format (``format: "cpd-latency"``, ``version: 5``; version 4, without ``element_rate``, is read as a
line of MACs alone, version 3, without ``macs_line`` either, as a model without a line), written beside the
dependency JSON::

    {"format": "cpd-latency", "version": 5, "fingerprint": "<16 hex>", "runtime": "onnxruntime-cpu",
     "input_shape": [1, 3, 512, 512], "baseline_s": 0.0123, "interaction": 1.1, "overlap": "macs",
     "macs_line": 0.96,   # or null
     "element_rate": 0.2,   # or null: the line counts MACs alone
     "groups": {"3": {"widths": [8, 16, 32], "seconds": [0.010, 0.011, 0.0123]}},
     "info": {...}}   # how it was measured (threads, runs, versions), the joint cuts, round_to measurements
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cpd.files import DocKind, write_json_atomic
from cpd.safe_load import read_document

LATENCY = DocKind("cpd-latency", 5, "latency model")
#: the versions read (3: written before the MACs line, read as a model without one; 4: before the element rate)
READABLE = (3, 4, 5)
#: what a latency model's interaction was fitted over: the MACs overlap, or none (``o = 1``)
OVERLAPS = ("macs", "none")


def fit_through_zero(xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray) -> float | None:
    """The least-squares ``k`` of ``ys ~ k * xs`` (a line through zero); None when every ``x`` is zero."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    den = float((x * x).sum())
    return float((x * y).sum()) / den if den > 0 else None


def monotone(values: Sequence[float]) -> np.ndarray:
    """The non-decreasing sequence closest to ``values`` in least squares (pool-adjacent-violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return np.concatenate([np.full(int(n), m) for m, n in blocks]) if blocks else np.zeros(0)


@dataclass(frozen=True)
class GroupCurve:
    """Measured latency of the whole model with one group cut to each width.

    Attributes:
        widths: kept channels, strictly ascending; the last is the group's full width.
        seconds: the measured latency at each width (the last: the baseline).
    """

    widths: tuple[int, ...]
    seconds: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.seconds) or not self.widths:
            raise ValueError(f"a group curve needs one time per width, got widths={list(self.widths)} and "
                             f"seconds={list(self.seconds)}")
        if any(b <= a for a, b in zip(self.widths, self.widths[1:])) or self.widths[0] < 1:
            raise ValueError(f"widths={list(self.widths)}: must be strictly ascending positive channel counts")
        if not all(np.isfinite(self.seconds)) or min(self.seconds) <= 0:
            raise ValueError(f"seconds={list(self.seconds)}: must be positive, finite times")
        object.__setattr__(self, "_fit", monotone(self.seconds))

    def at(self, width: float | np.ndarray) -> np.ndarray:
        """``t_g(width)``: the monotone piecewise-linear fit; below the narrowest width measured, the first
        segment's slope goes on (down to zero width); above the full width, the time stays the baseline's."""
        w = np.asarray(width, dtype=np.float64)
        xs, ys = np.asarray(self.widths, dtype=np.float64), self._fit  # type: ignore[attr-defined]
        out = np.interp(w, xs, ys)
        if len(xs) > 1:
            slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
            out = np.where(w < xs[0], ys[0] - slope * (xs[0] - w), out)
        return out


@dataclass(frozen=True)
class LatencyModel:
    """Per-group latency curves of one model on one runtime at one input shape (see the module docstring).

    Attributes:
        fingerprint: the architecture measured (:func:`cpd.graph.fingerprint`).
        runtime: where it was measured (``onnxruntime-cpu``, ``onnxruntime-cuda``, ``torch-eager``, ...).
        input_shape: the deployment input shape, batch included.
        baseline: the unpruned model's measured latency, in seconds.
        groups: group id -> its curve.
        info: how it was measured (free-form, JSON-ready).
        interaction: ``k`` of the module docstring, the measured saving of joint cuts over ``o * additive``.
        overlap: ``"macs"`` (predictions take the caller's MACs overlap ``o``) or ``"none"`` (``o = 1``).
        macs_line: ``b`` of the module docstring, the share of the baseline a cut saves per share of the
            counted MACs it saves; None: predictions come from the curves.
        element_rate: ``c`` of the module docstring, what a cut saves per share of the counted elements it
            saves, beside ``b``; None: the line counts MACs alone.
    """

    fingerprint: str
    runtime: str
    input_shape: tuple[int, ...]
    baseline: float
    groups: Mapping[int, GroupCurve]
    info: Mapping[str, Any] = field(default_factory=dict)
    interaction: float = 1.0
    overlap: str = "none"
    macs_line: float | None = None
    element_rate: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.baseline, (int, float)) and np.isfinite(self.baseline) and self.baseline > 0):
            raise ValueError(f"baseline={self.baseline!r}: must be a positive time in seconds")
        if not (isinstance(self.interaction, (int, float)) and np.isfinite(self.interaction)
                and self.interaction > 0):
            raise ValueError(f"interaction={self.interaction!r}: must be a positive factor (1: additive savings)")
        if self.macs_line is not None and not (isinstance(self.macs_line, (int, float))
                                               and np.isfinite(self.macs_line) and self.macs_line > 0):
            raise ValueError(f"macs_line={self.macs_line!r}: must be a positive share (about 1), or None")
        if self.element_rate is not None and not (isinstance(self.element_rate, (int, float))
                                                  and np.isfinite(self.element_rate) and self.element_rate >= 0
                                                  and self.macs_line is not None):
            raise ValueError(f"element_rate={self.element_rate!r}: must be a share >= 0 beside a macs_line, or None")
        if self.overlap not in OVERLAPS:
            raise ValueError(f"overlap={self.overlap!r}: must be one of {list(OVERLAPS)}")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))

    def additive_saving(self, widths: Mapping[int, float]) -> float:
        """``sum_g (t_g(W_g) - t_g(w_g))``: the single-group savings of ``widths``, summed (no interaction)."""
        return sum(float(self.groups[g].at(self.groups[g].widths[-1]) - self.groups[g].at(w))
                   for g, w in widths.items() if g in self.groups)

    def predict(self, widths: Mapping[int, float], overlap: float = 1.0) -> float:
        """``T(w)``: the predicted latency with group ``g`` kept ``widths[g]`` channels wide (others whole).

        Args:
            widths: kept channels per group.
            overlap: ``o(w)`` of the module docstring (ignored by a model whose ``overlap`` is ``"none"``).
        """
        o = float(overlap) if self.overlap == "macs" else 1.0
        return self.baseline - self.interaction * o * self.additive_saving(widths)

    def predict_from_macs(self, macs_share_saved: float, elements_share_saved: float = 0.0) -> float:
        """``T = baseline * (1 - b * s - c * e)``: the latency of a cut saving the share ``s`` of the counted
        MACs and ``e`` of the counted elements (``c = 0`` without an element rate).

        Raises:
            ValueError: the model has no MACs line (``macs_line`` is None).
        """
        if self.macs_line is None:
            raise ValueError("this latency model has no MACs line: build it with whole-model cuts and MACs "
                             "(profile_latency with joint=True and macs=)")
        c = self.element_rate or 0.0
        return self.baseline * (1.0 - self.macs_line * float(macs_share_saved) - c * float(elements_share_saved))

    def unit_costs(self, gid: int, width: float, channels: np.ndarray,
                   overlap: np.ndarray | float = 1.0) -> np.ndarray:
        """What removing each unit alone would save now: ``k * m_u * (t_g(width) - t_g(width - channels[u]))``.

        Args:
            gid: the group.
            width: its kept channels now.
            channels: channels of each of its units.
            overlap: ``m_u`` per unit (ignored by a model whose ``overlap`` is ``"none"``).

        Returns:
            Seconds per unit (zeros for a group the model does not hold).
        """
        channels = np.asarray(channels, dtype=np.float64)
        if gid not in self.groups:
            return np.zeros(channels.shape)
        curve = self.groups[gid]
        m = np.asarray(overlap, dtype=np.float64) if self.overlap == "macs" else 1.0
        return self.interaction * m * np.maximum(float(curve.at(width)) - curve.at(width - channels), 0.0)

    def check_fits(self, fingerprint: str, runtime: str | None = None, input_shape: Sequence[int] | None = None,
                   groups: Sequence[int] | None = None, where: str = "") -> None:
        """Refuse a latency model measured for another architecture, runtime, input shape or set of groups.

        Args:
            fingerprint: the model's fingerprint.
            runtime, input_shape: what the caller deploys on (None: not checked).
            groups: the group ids the caller prunes (None: not checked).
            where: the file, named at the start of the message.

        Raises:
            ValueError: one line naming what differs.
        """
        prefix = f"{where}: " if where else "latency model: "
        if fingerprint != self.fingerprint:
            raise ValueError(f"{prefix}measured for a model with fingerprint {self.fingerprint}, this model has "
                             f"{fingerprint}: build the latency model again for this model")
        if runtime is not None and runtime != self.runtime:
            raise ValueError(f"{prefix}measured on runtime {self.runtime!r}, not {runtime!r}: build it on the "
                             "runtime you deploy on")
        if input_shape is not None and tuple(int(d) for d in input_shape) != self.input_shape:
            raise ValueError(f"{prefix}measured at input shape {list(self.input_shape)}, not "
                             f"{[int(d) for d in input_shape]}: build it at the deployment input size and batch")
        missing = sorted(set(groups or ()) - set(self.groups))
        if missing:
            raise ValueError(f"{prefix}has no curve for the prunable group(s) {missing}; it holds groups "
                             f"{sorted(self.groups)}: build it from the same dependency JSON")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (see the module docstring)."""
        return {**LATENCY.header(), "fingerprint": self.fingerprint, "runtime": self.runtime,
                "input_shape": list(self.input_shape), "baseline_s": float(self.baseline),
                "interaction": float(self.interaction), "overlap": self.overlap,
                "macs_line": None if self.macs_line is None else float(self.macs_line),
                "element_rate": None if self.element_rate is None else float(self.element_rate),
                "groups": {str(g): {"widths": [int(w) for w in c.widths], "seconds": [float(s) for s in c.seconds]}
                           for g, c in sorted(self.groups.items())},
                "info": dict(self.info)}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "") -> "LatencyModel":
        """Read :meth:`to_dict`'s document.

        Raises:
            ValueError: not a latency model, another version, or a malformed field (named).
        """
        if isinstance(doc, Mapping) and doc.get("format") == LATENCY.format and doc.get("version") in READABLE:
            doc = {**doc, "version": LATENCY.version}
        LATENCY.check(doc, where)
        prefix = f"{where}: " if where else ""
        try:
            groups = {int(g): GroupCurve(tuple(int(w) for w in c["widths"]), tuple(float(s) for s in c["seconds"]))
                      for g, c in doc["groups"].items()}
            return cls(str(doc["fingerprint"]), str(doc["runtime"]), tuple(doc["input_shape"]),
                       float(doc["baseline_s"]), groups, dict(doc.get("info", {})), float(doc["interaction"]),
                       str(doc["overlap"]), None if doc.get("macs_line") is None else float(doc["macs_line"]),
                       None if doc.get("element_rate") is None else float(doc["element_rate"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{prefix}malformed latency model ({type(e).__name__}: {e}); expected the keys "
                             "fingerprint, runtime, input_shape, baseline_s, interaction, overlap, groups") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the document atomically (indented, so a diff shows what changed)."""
        write_json_atomic(self.to_dict(), path, indent=1)


def read_latency_model(path: str | os.PathLike[str]) -> LatencyModel:
    """Load a latency model file.

    Raises:
        FileNotFoundError: no such file.
        cpd.safe_load.BadFileError: not JSON, not a latency model, another version, or a malformed one (a
            ValueError; one line naming the file).
    """
    return read_document(path, "latency model", LatencyModel.from_dict,
                         "a cpd-latency file written by cpd.prune.profile_latency")
