"""The README's plain-PyTorch example runs as written (the core alone, no OpenMMLab)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _example(title: str) -> str:
    section = README.split(f"### {title}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_plain_classifier_example_runs(one_thread, capsys) -> None:
    torch.manual_seed(0)
    code = _example("A plain PyTorch classifier")
    unpruned: dict = {}
    exec(compile(code.split("inputs =")[0], "README.md", "exec"), unpruned)  # the model as defined
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    model = scope["model"]
    before = sum(p.numel() for p in unpruned["model"].parameters())
    assert sum(p.numel() for p in model.parameters()) <= 0.55 * before  # pruned to about half
    assert model[-1].out_features == 10  # the class logits are never pruned
    assert "(10, False, 'reaches a model output')" in capsys.readouterr().out
