"""Shared body of the per-task zoo tests: build a shipped config small, comb it, prove ``check``'s invariants."""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from cpd.check import CheckReport, check
from cpd.combing import comb
from cpd.mm import load_config
from cpd.mm.tasks import task_of


def check_config(config: str, size: int, options: Mapping[str, Any] | None = None,
                 onnx: bool = False) -> tuple[CheckReport, list[str], list[str]]:
    """Build ``config`` at ``size`` px, comb it with its task's training forward, and check a 40% cut.

    Returns:
        The report, the task's output layers, and those of them whose output channels comb left prunable.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(config, options)
        task = task_of(cfg)
        # the same weights whatever ran before in this process (the workers of -n 2 take files in any order,
        # and the masked-against-cut error, float rounding, moves with the weights)
        torch.manual_seed(0)
        model = task.build_model(cfg, input_size=(size, size)).eval()
        x = task.example_inputs(model, size=(size, size))
        graph = comb(model, (x,), forward_fn=task.train_forward)
        outputs = task.output_modules(model, x)
        cut = [name for name in outputs for g in graph.groups
               if g.prunable and g.num_units > 1
               and any(m.name == f"{name}.weight" and m.dim == 0 for m in g.members)]
        rep = check(model, (x,), forward_fn=task.train_forward, ratio=0.4, seed=0, onnx=onnx, graph=graph)
    return rep, outputs, cut


def assert_prunes(rep: CheckReport, outputs: list[str], cut: list[str], share: float = 0.75) -> None:
    """The invariants held, the output layers are kept whole, and most groups (all but outputs) are prunable."""
    assert rep.ok, rep.failures
    assert rep.rel_err <= 1e-5
    assert outputs, "the task named no output layer"
    assert not cut, f"output layers left prunable: {cut}"
    assert rep.prunable_groups >= share * rep.groups, rep.not_prunable
    assert rep.params_after < 0.85 * rep.params_before
    if rep.onnx is not None:
        assert rep.onnx["ok"], rep.onnx
