"""``PruneConfig``: every knob of a pruning run, validated when it is made."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from cpd.importance import IMPORTANCES, METRICS

#: pruning steps to reach the target when ``step_fraction`` is not given.
DEFAULT_STEPS = 10


@dataclass(frozen=True)
class PruneConfig:
    """How to prune.

    Attributes:
        criterion: name of a registered importance (``obd``, the default; ``hessian``, ``group_fisher``,
            ``taylor``, ``magnitude``, ``magnitude_l2``, ``random``, or one added with ``register_importance``).
        interval: training iterations between two pruning steps (default 50, as the original's hook);
            the importance is accumulated over every batch of the interval.
        thresholds: ascending sparsities in (0, 1); the last is the target.  A pruning step never goes
            past the next threshold, so the run passes through a model at each (to save, as the original
            ``save_sparsity_thr``); pruning stops at the target.
        metric: what sparsity measures: ``params`` (parameters), ``flops`` (MACs at the example input
            size), ``channels`` (channels of the prunable groups) or ``latency`` (seconds on a runtime,
            from a measured latency model and re-measured at each threshold; the pruner needs the model,
            see :mod:`cpd.prune.latency`).  ``sparsity = 1 - now / original``, so a latency threshold
            ``t`` is a ``1 / (1 - t)`` speed-up (0.5: twice as fast).
        round_to: channels removed together in channel groups, so kept widths stay multiples of it
            (halved for groups too small to keep a multiple above their floor).  Heads go one at a time.
        step_fraction: how much one pruning step removes, as a fraction of the original metric
            (``0.05``: 5 points of sparsity per step); None: ``target / 10``, i.e. the target is reached
            in 10 pruning steps.
        min_keep: share of each group's original channels (or heads) that always stays; at least one
            unit stays in every group whatever its value.
        seed: seeds the pruner's random generator (``random`` criterion, nothing else).
    """

    criterion: str = "obd"
    interval: int = 50
    thresholds: tuple[float, ...] = (0.5,)
    metric: str = "params"
    round_to: int = 8
    step_fraction: float | None = None
    min_keep: float = 0.1
    seed: int = 0

    #: other names a field is known by: the original work's hook argument for the thresholds.
    ALIASES: ClassVar[dict[str, str]] = {"save_sparsity_thr": "thresholds"}

    def __post_init__(self) -> None:
        if isinstance(self.thresholds, (list, tuple)):
            object.__setattr__(self, "thresholds", tuple(float(t) if _is_number(t) else t for t in self.thresholds))
        elif isinstance(self.thresholds, (int, float)) and not isinstance(self.thresholds, bool):
            object.__setattr__(self, "thresholds", (float(self.thresholds),))
        self.validate()

    @property
    def target(self) -> float:
        """The final sparsity (the last threshold)."""
        return self.thresholds[-1]

    @property
    def step_size(self) -> float:
        """Sparsity removed per pruning step (``step_fraction`` or ``target / 10``)."""
        return self.step_fraction if self.step_fraction is not None else self.target / DEFAULT_STEPS

    @property
    def max_iterations(self) -> int:
        """An upper bound on the training iterations a run needs to reach the target.

        Each pruning step removes ``step_size`` or stops at the next threshold, so the target takes at
        most ``ceil(target / step_size)`` steps plus one per threshold, every ``interval`` iterations (one
        more interval of slack for a step that falls a little short).
        """
        steps = math.ceil(self.target / self.step_size - 1e-9) + len(self.thresholds) + 1
        return self.interval * steps

    def validate(self) -> None:
        """Check every field.

        Raises:
            ValueError: naming the field, its value and what is allowed.
        """
        if self.criterion not in IMPORTANCES:
            raise ValueError(f"criterion={self.criterion!r}: not a registered importance; "
                             f"choose one of {sorted(IMPORTANCES)}")
        _int_at_least("interval", self.interval, 1)
        _int_at_least("round_to", self.round_to, 1)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r}: must be an integer")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}: not supported; choose one of {list(METRICS)}")
        thr = self.thresholds
        shown = list(thr) if isinstance(thr, tuple) else thr
        if not isinstance(thr, tuple) or not thr:
            raise ValueError(f"thresholds={shown!r}: must be a non-empty list of sparsities in (0, 1), "
                             "strictly ascending; the last one is the target")
        for t in thr:
            if not _is_number(t) or not 0.0 < t < 1.0:
                raise ValueError(f"thresholds={shown!r}: {t!r} is not a sparsity in (0, 1) "
                                 "(the target, the last one, must be in (0, 1) too)")
        for a, b in zip(thr, thr[1:]):
            if not a < b:
                raise ValueError(f"thresholds={shown!r}: must be strictly ascending ({a!r} is followed by {b!r}); "
                                 "the last one is the target")
        if self.step_fraction is not None and (not _is_number(self.step_fraction)
                                               or not 0.0 < self.step_fraction <= 1.0):
            raise ValueError(f"step_fraction={self.step_fraction!r}: must be in (0, 1] or None (target / "
                             f"{DEFAULT_STEPS})")
        if not _is_number(self.min_keep) or not 0.0 <= self.min_keep < 1.0:
            raise ValueError(f"min_keep={self.min_keep!r}: must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values."""
        d = asdict(self)
        d["thresholds"] = list(self.thresholds)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], aliases: Mapping[str, str] | None = None) -> "PruneConfig":
        """Build from a mapping (a ``params.yaml`` section, a hook's keyword arguments).

        Args:
            data: option name -> value; missing options keep their defaults.
            aliases: other accepted names -> field name (e.g. :attr:`ALIASES`); a message about a value
                given under an alias names the alias.

        Raises:
            ValueError: an unknown key, a field given twice, or a bad value (see :meth:`validate`).
        """
        aliases = dict(aliases or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - set(aliases))
        if unknown:
            raise ValueError(f"unknown prune option(s) {unknown}; valid options are {sorted(known | set(aliases))}")
        values: dict[str, Any] = {}
        given_as: dict[str, str] = {}
        for key, value in data.items():
            name = aliases.get(key, key)
            if name in values:
                raise ValueError(f"{given_as[name]} and {key} name the same option ({name}); give one of them")
            values[name], given_as[name] = value, key
        try:
            return cls(**values)
        except ValueError as e:
            message = str(e)
            for name, key in given_as.items():
                if key != name and message.startswith(f"{name}="):
                    message = key + message[len(name):]
            raise ValueError(message) from None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int_at_least(key: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key}={value!r}: must be an integer >= {low}")
