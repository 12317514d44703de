"""What a pruner remembers between iterations, and its checkpointable form.

``Pruner.state_dict()`` holds only plain values and CPU tensors (``torch.load(weights_only=True)`` reads
it): the dead units of every group, the saliency accumulated in the current interval, the iteration, the
measured sparsity, the thresholds reached, the history of pruning steps and the random generator's state.
Restoring it on a pruner built the same way (same model, inputs and config) resumes the run to the same
result.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cpd.prune.pruner import Pruner

FORMAT = "cpd-pruner"
VERSION = 1


@dataclass(frozen=True)
class PruneEvent:
    """What one pruning step did.

    Attributes:
        iteration: the training iteration (``step()`` calls so far).
        removed: ``{group id: [units]}`` removed by this step.
        sparsity: the sparsity measured after it.
        thresholds: the thresholds crossed by it (save a model for each).
        done: the target is reached, or nothing more can go.
        batches: batches whose saliency this step ranked.
    """

    iteration: int
    removed: dict[int, list[int]]
    sparsity: float
    thresholds: tuple[float, ...]
    done: bool
    batches: int

    def to_dict(self) -> dict[str, Any]:
        """Plain values (group ids as strings, as in JSON)."""
        return {"iteration": self.iteration, "removed": {str(g): list(u) for g, u in self.removed.items()},
                "sparsity": float(self.sparsity), "thresholds": list(self.thresholds), "done": self.done,
                "batches": self.batches}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PruneEvent":
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["iteration"]), {int(g): [int(x) for x in u] for g, u in d["removed"].items()},
                   float(d["sparsity"]), tuple(float(t) for t in d["thresholds"]), bool(d["done"]),
                   int(d["batches"]))


def pruner_state(pruner: "Pruner") -> dict[str, Any]:
    """The pruner's state as plain values and CPU tensors."""
    return {"format": FORMAT, "version": VERSION, "fingerprint": pruner.graph.fingerprint,
            "criterion": pruner.config.criterion, "metric": pruner.config.metric,
            "iteration": pruner.iteration, "sparsity": float(pruner.sparsity),
            "reached": [float(t) for t in pruner.reached], "exhausted": pruner.exhausted,
            "frozen": {str(g): why for g, why in pruner.frozen.items()},
            "dead": {str(g): u for g, u in pruner.masks.removed().items()},
            "saliency": pruner.saliency.state_dict(), "rng": pruner.rng.bit_generator.state,
            "history": [e.to_dict() for e in pruner.history]}


def load_pruner_state(pruner: "Pruner", state: Mapping[str, Any]) -> None:
    """Restore :func:`pruner_state` into ``pruner``; every check runs before anything changes.

    Raises:
        ValueError: not a pruner state, or one saved for another architecture, criterion, metric or groups.
    """
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"not a cpd pruner state (format {found!r}, expected {FORMAT!r})")
    if state.get("version") != VERSION:
        raise ValueError(f"pruner state version {state.get('version')!r} is not supported (reads {VERSION})")
    for key, mine in (("fingerprint", pruner.graph.fingerprint), ("criterion", pruner.config.criterion),
                      ("metric", pruner.config.metric)):
        if state[key] != mine:
            raise ValueError(f"the pruner state was saved with {key}={state[key]!r}, this pruner has {key}={mine!r}")
    dead = {g: np.zeros(len(d), dtype=bool) for g, d in pruner.masks.dead.items()}
    for g, units in state["dead"].items():
        gid = int(g)
        if gid not in dead:
            raise ValueError(f"the pruner state removes units of group {gid}, which this pruner does not prune; "
                             f"it prunes groups {sorted(dead)}")
        u = np.asarray(units, dtype=np.int64)
        if u.size and (u.min() < 0 or u.max() >= len(dead[gid]) or u.size >= len(dead[gid])):
            raise ValueError(f"the pruner state removes units {u.tolist()} of group {gid}, which has "
                             f"{len(dead[gid])} units (0..{len(dead[gid]) - 1}, at least one kept)")
        dead[gid][u] = True
    backup = pruner.saliency.state_dict()
    try:
        pruner.saliency.load_state_dict(state["saliency"])
    except (KeyError, ValueError):
        pruner.saliency.load_state_dict(backup)
        raise
    pruner.masks.set_(dead)
    pruner.rng.bit_generator.state = state["rng"]
    pruner.iteration = int(state["iteration"])
    pruner.sparsity = float(state["sparsity"])
    pruner.reached = [float(t) for t in state["reached"]]
    pruner.exhausted = bool(state["exhausted"])
    pruner.frozen = {int(g): str(why) for g, why in state["frozen"].items()}
    pruner.history = [PruneEvent.from_dict(e) for e in state["history"]]
