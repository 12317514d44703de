"""How much gradient signal the criteria benchmark's baselines leave on their own training scenes.

The gradient criteria (``obd``, ``hessian``, ``group_fisher``, ``taylor``) sum their saliency from the
training batches seen while pruning.  A baseline that has memorised its training scenes gives them almost no
gradient there.  For each task of ``benchmarks/criteria.py``: train its baseline exactly as that benchmark
does (same scenes, steps, learning rate, seed), then report the loss and the metric on the training and the
held-out scenes, and the mean squared gradient norm of a batch of 32 (train mode, as pruning runs) drawn from
each.

    python benchmarks/train_signal.py [--task cls seg] [--batches 10]

Writes benchmarks/results/train_signal.json (the docs cite it by hand).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.criteria import BENCHES, batch_loss, build, train  # noqa: E402
from benchmarks.report import machine, write_results  # noqa: E402


def mean_loss(bench, model, x: torch.Tensor, y: torch.Tensor, chunk: int = 250) -> float:
    """Cross-entropy of the model's logits over ``x`` (eval mode, in chunks)."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            total += float(F.cross_entropy(bench.logits(model, x[i:i + chunk]), y[i:i + chunk], reduction="sum"))
    return total / y.numel()


def gradient_signal(bench, model, x: torch.Tensor, y: torch.Tensor, batches: int, seed: int = 1) -> float:
    """Mean over ``batches`` random batches of 32 of the squared norm of the loss gradient (train mode)."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    total = 0.0
    for _ in range(batches):
        model.zero_grad()
        batch_loss(bench, model, x, y, gen).backward()
        total += sum(float((p.grad ** 2).sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    return total / batches


def measure(name: str, batches: int) -> dict:
    """Train the task's baseline as the criteria benchmark does; its loss, metric and gradient signal."""
    bench = BENCHES[name]
    d = bench.defaults
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = bench.scenes(d["train_scenes"], "train", 0), bench.scenes(d["test_scenes"], "val", 1)
    model = build(bench)
    t0 = time.perf_counter()
    train(bench, model, xtr, ytr, steps=d["baseline_steps"], lr=d["baseline_lr"], seed=0)
    out = {"task": name, "train_scenes": d["train_scenes"], "test_scenes": d["test_scenes"],
           "baseline_steps": d["baseline_steps"], "train_seconds": time.perf_counter() - t0}
    for split, (x, y) in (("train", (xtr, ytr)), ("held_out", (xte, yte))):
        out[split] = {"loss": mean_loss(bench, model, x, y), bench.key: bench.score(model, x, y),
                      "grad_sq_per_batch": gradient_signal(bench, model, x, y, batches)}
    out["held_out_over_train_grad_sq"] = out["held_out"]["grad_sq_per_batch"] / out["train"]["grad_sq_per_batch"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", nargs="+", choices=list(BENCHES), default=["cls", "seg"])
    ap.add_argument("--batches", type=int, default=10, help="batches of 32 per gradient estimate")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    rows = []
    for name in args.task:
        rows.append(measure(name, args.batches))
        print(rows[-1], flush=True)
        write_results("train_signal", {"runs": rows, "args": vars(args), "machine": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
