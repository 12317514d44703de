"""What a pruner remembers between iterations, as plain data: :class:`PruneEvent` and :class:`PrunerState`.

Neither knows the :class:`cpd.prune.Pruner`: ``Pruner.state_dict()`` builds a :class:`PrunerState` and writes
it out with :meth:`PrunerState.to_dict`; ``Pruner.load_state_dict()`` reads one back with
:meth:`PrunerState.from_dict`, has it checked against itself (:meth:`PrunerState.check_fits`) and applies it.
The dict holds only plain values and CPU tensors, so ``torch.load(weights_only=True)`` reads it.  Restoring
it on a pruner built the same way (same model, inputs and config) resumes the run to the same result.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cpd.files import DocKind

PRUNER_STATE = DocKind("cpd-pruner", 1, "pruner state")


@dataclass(frozen=True)
class PruneEvent:
    """What one pruning step did.

    Attributes:
        iteration: the training iteration (``step()`` calls so far).
        removed: ``{group id: [units]}`` removed by this step.
        sparsity: the sparsity measured after it.
        crossed: the thresholds this step crossed (save a model for each).
        done: the target is reached, or nothing more can go.
        batches: batches whose saliency this step ranked.
        predicted: ``metric="latency"``: the sparsity the latency model predicts (uncorrected); else None.
    """

    iteration: int
    removed: dict[int, list[int]]
    sparsity: float
    crossed: tuple[float, ...]
    done: bool
    batches: int
    predicted: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (group ids as strings, as in JSON)."""
        return {"iteration": self.iteration, "removed": {str(g): list(u) for g, u in self.removed.items()},
                "sparsity": float(self.sparsity), "crossed": list(self.crossed), "done": self.done,
                "batches": self.batches, "predicted": self.predicted}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PruneEvent":
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["iteration"]), {int(g): [int(x) for x in u] for g, u in d["removed"].items()},
                   float(d["sparsity"]), tuple(float(t) for t in d.get("crossed", d.get("thresholds", ()))),
                   bool(d["done"]),
                   int(d["batches"]), None if d.get("predicted") is None else float(d["predicted"]))


@dataclass
class PrunerState:
    """A pruner's state (see the module docstring).

    Attributes:
        fingerprint: the architecture the pruner prunes.
        criterion, metric: the importance and the sparsity metric it was built with.
        iteration: training iterations so far.
        sparsity: the measured sparsity.
        reached: thresholds crossed so far.
        exhausted: no group could lose another unit.
        frozen: group id -> why it may lose no more units.
        dead: group id -> its removed units.
        saliency: the saliency accumulator's state (:meth:`SaliencyAccumulator.state_dict`).
        rng: the random generator's ``bit_generator.state``.
        history: every pruning step so far.
        correction: ``metric="latency"``: the least-squares measured / predicted saving over the checks.
        checks: ``metric="latency"``: every measurement (``Pruner.checks``).
    """

    fingerprint: str
    criterion: str
    metric: str
    iteration: int = 0
    sparsity: float = 0.0
    reached: list[float] = field(default_factory=list)
    exhausted: bool = False
    frozen: dict[int, str] = field(default_factory=dict)
    dead: dict[int, list[int]] = field(default_factory=dict)
    saliency: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    history: list[PruneEvent] = field(default_factory=list)
    correction: float = 1.0
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The state as plain values and CPU tensors, with its format header."""
        return {**PRUNER_STATE.header(), "fingerprint": self.fingerprint, "criterion": self.criterion,
                "metric": self.metric, "iteration": self.iteration, "sparsity": float(self.sparsity),
                "reached": [float(t) for t in self.reached], "exhausted": self.exhausted,
                "frozen": {str(g): why for g, why in self.frozen.items()},
                "dead": {str(g): list(u) for g, u in self.dead.items()},
                "saliency": self.saliency, "rng": self.rng, "history": [e.to_dict() for e in self.history],
                "correction": float(self.correction), "checks": [dict(c) for c in self.checks]}

    @classmethod
    def from_dict(cls, d: Any) -> "PrunerState":
        """Read :meth:`to_dict`'s output.

        Raises:
            ValueError: not a pruner state, or another version.
        """
        PRUNER_STATE.check(d)
        return cls(fingerprint=str(d["fingerprint"]), criterion=str(d["criterion"]), metric=str(d["metric"]),
                   iteration=int(d["iteration"]), sparsity=float(d["sparsity"]),
                   reached=[float(t) for t in d["reached"]], exhausted=bool(d["exhausted"]),
                   frozen={int(g): str(why) for g, why in d["frozen"].items()},
                   dead={int(g): [int(u) for u in units] for g, units in d["dead"].items()},
                   saliency=d["saliency"], rng=d["rng"], history=[PruneEvent.from_dict(e) for e in d["history"]],
                   correction=float(d.get("correction", 1.0)), checks=[dict(c) for c in d.get("checks", [])])

    def check_fits(self, fingerprint: str, criterion: str, metric: str, num_units: Mapping[int, int]) -> None:
        """Refuse a state saved for another architecture, criterion, metric or set of groups.

        Args:
            fingerprint, criterion, metric: those of the pruner that would load the state.
            num_units: units of every group that pruner prunes.

        Raises:
            ValueError: naming what differs.
        """
        for key, mine in (("fingerprint", fingerprint), ("criterion", criterion), ("metric", metric)):
            if getattr(self, key) != mine:
                raise ValueError(f"the pruner state was saved with {key}={getattr(self, key)!r}, this pruner has "
                                 f"{key}={mine!r}")
        for gid, units in self.dead.items():
            if gid not in num_units:
                raise ValueError(f"the pruner state removes units of group {gid}, which this pruner does not "
                                 f"prune; it prunes groups {sorted(num_units)}")
            n = num_units[gid]
            if units and (min(units) < 0 or max(units) >= n or len(set(units)) >= n):
                raise ValueError(f"the pruner state removes units {sorted(units)} of group {gid}, which has {n} "
                                 f"units (0..{n - 1}, at least one kept)")
