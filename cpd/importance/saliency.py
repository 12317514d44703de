"""Per-unit first-order saliencies, ``theta * dL/dtheta`` summed over each unit's slice of each member.

For a batch ``b``, a group member ``m`` (one axis of one parameter) and a unit ``u`` of the group::

    s[b, m, u] = sum over the indices i of m's axis that belong to u, and over every other axis,
                 of theta * dL_b/dtheta

is the first-order change of the batch loss when the unit's slice of that parameter is set to zero
(with the opposite sign).  The accumulator keeps, over the batches of one pruning interval::

    first[m, u]  = sum_b s[b, m, u]            (for the first-order ``taylor`` criterion)
    second[u]    = sum_b sum_m s[b, m, u]^2    (for the second-order ``hessian`` criterion)

    joint[u]     = sum_b (sum_m s[b, m, u])^2  (for ``group_fisher``: one mask per coupled unit)

and, when asked for (``diagonal=True``, the ``obd`` criterion), per element rather than per slice::

    diagonal[u]  = sum_b sum_m sum over the unit's indices i of m of (theta_i * dL_b/dtheta_i)^2

so every batch counts, and the memory is a few small arrays per group.  Each update computes one
``theta * grad`` product per parameter at a time (squared in place for ``diagonal``): never more than one
extra copy of a parameter.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cpd.graph.group import Group


class SaliencyAccumulator:
    """Collects ``first`` and ``second`` (see the module docstring) for the parameter members of ``groups``.

    Args:
        model: the model whose ``named_parameters()`` the groups name.
        groups: the groups to score (their ``"param"`` members are read; buffers and attributes have no
            gradient).
        diagonal: also collect ``diagonal`` (one more elementwise square per parameter and batch).

    Raises:
        ValueError: a group names a parameter the model does not have.
    """

    def __init__(self, model: nn.Module, groups: Sequence[Group], diagonal: bool = False) -> None:
        self.model = model
        self.diagonal_on = diagonal
        params = dict(model.named_parameters())
        self.batches = 0
        self.num_units: dict[int, int] = {}
        self.rows: dict[int, list[str]] = {}
        #: parameter name -> [(group id, row of ``first``, axis, unit of every index)]
        self._entries: dict[str, list[tuple[int, int, int, torch.Tensor]]] = {}
        self.first: dict[int, torch.Tensor] = {}
        self.second: dict[int, torch.Tensor] = {}
        self.joint: dict[int, torch.Tensor] = {}
        self.diagonal: dict[int, torch.Tensor] = {}
        for g in groups:
            members = [m for m in g.members if m.kind == "param"]
            self.num_units[g.id] = g.num_units
            self.rows[g.id] = [f"{m.name}@{m.dim}" for m in members]
            device = torch.device("cpu")
            for row, m in enumerate(members):
                if m.name not in params:
                    raise ValueError(f"group {g.id} names parameter '{m.name}', which the model does not have")
                device = params[m.name].device
                unit = torch.as_tensor(m.unit, dtype=torch.long, device=device)
                self._entries.setdefault(m.name, []).append((g.id, row, m.dim, unit))
            self.first[g.id] = torch.zeros(len(members), g.num_units, dtype=torch.float64, device=device)
            self.second[g.id] = torch.zeros(g.num_units, dtype=torch.float64, device=device)
            self.joint[g.id] = torch.zeros(g.num_units, dtype=torch.float64, device=device)
            if diagonal:
                self.diagonal[g.id] = torch.zeros(g.num_units, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self) -> None:
        """Add the current gradients (one batch) to the sums; call after ``backward()``, before the step.

        Parameters without a gradient in this batch add nothing.
        """
        params = dict(self.model.named_parameters())
        batch = {g: torch.zeros_like(t) for g, t in self.joint.items()}
        for name, entries in self._entries.items():
            p = params.get(name)
            if p is None or p.grad is None:
                continue
            theta, grad = p.detach().float(), p.grad.detach().float()
            if all(dim == 0 for _, _, dim, _ in entries) and theta.dim() > 1 and not self.diagonal_on:
                # row-wise dot products, without a temporary of the parameter's size
                rows = theta.reshape(theta.shape[0], 1, -1)
                prod = torch.bmm(rows, grad.reshape(theta.shape[0], -1, 1)).reshape(-1)
            else:
                prod = theta * grad
            for gid, row, dim, unit in entries:
                s = self._per_unit(prod, gid, dim, unit)
                first = self.first[gid]
                if first.device != s.device:
                    s = s.to(first.device)
                first[row] += s
                self.second[gid] += s * s
                batch[gid] += s
            if self.diagonal_on:
                prod.square_()
                for gid, _, dim, unit in entries:
                    self.diagonal[gid] += self._per_unit(prod, gid, dim, unit).to(self.diagonal[gid].device)
            del prod
        for gid, s in batch.items():
            self.joint[gid] += s * s
        self.batches += 1

    def _per_unit(self, prod: torch.Tensor, gid: int, dim: int, unit: torch.Tensor) -> torch.Tensor:
        """Sum ``prod`` over every axis but ``dim``, then over the indices of each unit (float64)."""
        others = [d for d in range(prod.dim()) if d != dim]
        per_index = prod.sum(dim=others) if others else prod
        s = torch.zeros(self.num_units[gid], dtype=torch.float64, device=per_index.device)
        s.index_add_(0, unit.to(per_index.device), per_index.double())
        return s

    def first_order(self, gid: int) -> np.ndarray:
        """``first[m, u]`` of group ``gid``: one row per parameter member (sum over the interval's batches)."""
        return self.first[gid].cpu().numpy()

    def second_order(self, gid: int) -> np.ndarray:
        """``second[u]`` of group ``gid``: the squared saliencies summed over members and batches."""
        return self.second[gid].cpu().numpy()

    def sums(self) -> list[torch.Tensor]:
        """The tensors holding the sums, in a fixed order (to average them over processes in place)."""
        return [table[g] for table in self._tables().values() for g in sorted(table)]

    def joint_second_order(self, gid: int) -> np.ndarray:
        """``joint[u]`` of group ``gid``: the saliency summed over members, squared, summed over batches."""
        return self.joint[gid].cpu().numpy()

    def diagonal_second_order(self, gid: int) -> np.ndarray:
        """``diagonal[u]`` of group ``gid`` (needs ``diagonal=True``).

        Raises:
            RuntimeError: the accumulator was built without ``diagonal``.
        """
        if not self.diagonal_on:
            raise RuntimeError("this saliency accumulator does not collect the diagonal terms (diagonal=False)")
        return self.diagonal[gid].cpu().numpy()

    def _tables(self) -> dict[str, dict[int, torch.Tensor]]:
        tables = {"first": self.first, "second": self.second, "joint": self.joint}
        if self.diagonal_on:
            tables["diagonal"] = self.diagonal
        return tables

    def reset(self) -> None:
        """Forget every batch (a new interval starts)."""
        for table in self._tables().values():
            for t in table.values():
                t.zero_()
        self.batches = 0

    def state_dict(self) -> dict:
        """The sums and the batch count, as plain CPU tensors and ints."""
        return {"batches": self.batches, **{key: {str(g): t.cpu().clone() for g, t in table.items()}
                                            for key, table in self._tables().items()}}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: the state was saved for other groups or shapes.
        """
        for key, mine in self._tables().items():
            saved = state[key]
            if sorted(int(g) for g in saved) != sorted(mine):
                raise ValueError(f"saliency state covers groups {sorted(int(g) for g in saved)}, this pruner "
                                 f"scores groups {sorted(mine)}")
            for g, t in mine.items():
                src = torch.as_tensor(saved[str(g)])
                if tuple(src.shape) != tuple(t.shape):
                    raise ValueError(f"saliency state of group {g} has shape {tuple(src.shape)}, expected "
                                     f"{tuple(t.shape)}")
                t.copy_(src)
        self.batches = int(state["batches"])
