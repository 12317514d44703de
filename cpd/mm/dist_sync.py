"""One pruning decision for every rank of a distributed run.

Under DDP every rank holds the same weights and the same (all-reduced) gradients, so every rank's
pruner would reach the same decision, up to floating-point noise.  To make that exact rather than
likely, the accumulated saliencies are averaged across ranks before each pruning step (every rank then
ranks identical numbers), and after it the ranks compare a digest of what they removed: a mismatch
stops the run with an error instead of letting the replicas silently diverge.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from mmengine.dist import all_gather_object, all_reduce, broadcast_object_list, get_rank, get_world_size


def distributed() -> bool:
    """Whether more than one process takes part in training."""
    return get_world_size() > 1


def average_saliency_(saliency: Any) -> None:
    """Average the accumulated sums of a ``SaliencyAccumulator`` over all ranks, in place."""
    if not distributed():
        return
    for t in saliency.sums():
        all_reduce(t, op="mean")


def digest(obj: Any) -> str:
    """A short hash of a JSON-ready object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_same_(what: str, value: Mapping[str, Any] | list | str) -> None:
    """Raise on every rank unless ``value`` is identical on all ranks.

    Args:
        what: what is compared (for the message).
        value: a JSON-ready value.

    Raises:
        RuntimeError: the ranks disagree (names the ranks and their digests).
    """
    if not distributed():
        return
    mine = digest(value)
    every = all_gather_object(mine)
    if len(set(every)) != 1:
        raise RuntimeError(f"ranks disagree on {what}: digests {every} (this is rank {get_rank()}); "
                           "the replicas would diverge")


def removed_digest_input(removed: Mapping[int, list[int]], sparsity: float) -> dict[str, Any]:
    """What :func:`check_same_` compares after a pruning step."""
    return {"removed": {str(g): list(map(int, u)) for g, u in removed.items()}, "sparsity": round(float(sparsity), 12)}


__all__ = ["average_saliency_", "check_same_", "digest", "distributed", "removed_digest_input"]


def from_rank0(fn: Callable[..., float]) -> Callable[..., float]:
    """``fn`` run on rank 0 only, its result given to every rank (a timing differs per rank; the pruning
    decision it feeds must not)."""
    def wrapped(*args: Any) -> float:
        if not distributed():
            return fn(*args)
        box = [fn(*args) if get_rank() == 0 else None]
        broadcast_object_list(box, src=0)
        return float(box[0])
    return wrapped
