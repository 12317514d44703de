"""Prune the embedded classifier or detector under DDP (CPU, gloo) and check every rank decides the same.

    torchrun --nproc_per_node 2 tests/dist/prune_two_ranks_task.py {classification,detection} OUT_DIR

As ``prune_two_ranks.py`` does for the segmentor: each rank trains the task's tiny run (two pruning steps,
the cut, then fine-tuning under a rebuilt DDP wrapper; the classifier's saved models get their batch norms
re-estimated) with ``tools/train.py``'s launcher, writes
``OUT_DIR/rank<r>.json`` (plan, pruning history, a digest of the parameters, what the wrapper and optimizer
hold), and rank 0 compares them.  Exit code 0 only if the ranks agree; ``tests/test_mm_pruning_dist.py``
runs it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the tiny runs
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, when not pip-installed

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402

from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.rebuild import prune_target  # noqa: E402
from cpd.mm.train import train  # noqa: E402

MAX_ITERS = 6


def parameters_digest(model: torch.nn.Module) -> str:
    """A digest of the parameters.  Not of the buffers: BatchNorm's running statistics follow each rank's own
    last batches (DDP broadcasts rank 0's at the start of a forward only), as in any DDP run."""
    h = hashlib.sha256()
    for name, t in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run(task: str, out: Path, rank: int):
    """Train the task's tiny run with the pruning hook under the pytorch launcher; return the runner."""
    if task == "classification":
        from cls_tiny import CLS_CONFIG, CLS_HOOK, cls_options

        from cpd.data.digit_pairs import write_mmpretrain_layout

        data = write_mmpretrain_layout(out / f"data-rank{rank}", n_train=32, n_val=8, seed=0)
        # the saved models' batch norms re-estimated on rank 0 alone (it saves them): no rank may wait on it
        hooks = [dict(CLS_HOOK, bn_batches=3)]
        return train(CLS_CONFIG, out / "work", cls_options(data, max_iters=MAX_ITERS, hooks=hooks), launcher="pytorch")
    from det_tiny import DET_CONFIG, det_options

    from cpd.data.digit_boxes import write_coco_layout

    data = write_coco_layout(out / f"data-rank{rank}", n_train=32, n_val=4, seed=0)  # the same scenes on each
    return train(DET_CONFIG, out / "work", det_options(data, max_iters=MAX_ITERS), launcher="pytorch")


def main(task: str, out: Path) -> int:
    rank = int(os.environ["RANK"])
    runner = run(task, out, rank)
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    model = prune_target(runner.model)
    held = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g["params"]}
    report = {
        "rank": rank, "world_size": dist.get_world_size(), "iter": runner.iter, "task": hook.task.name,
        "wrapped": is_model_wrapper(runner.model), "materialized": hook.materialized,
        "wrapper_holds_the_cut_model": runner.model.module is model,
        "optimizer_holds_the_cut_params": held == {id(p) for p in model.parameters()},
        "removed": hook.plan["removed"] if hook.plan else None,
        "history": [e.to_dict() for e in hook.pruner.history],
        "weights": parameters_digest(model),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    dist.barrier()
    if rank != 0:
        return 0
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(dist.get_world_size())]
    same = {k: len({json.dumps(r[k]) for r in reports}) == 1 for k in ("removed", "history", "weights")}
    checks = all(r["wrapped"] and r["materialized"] and r["wrapper_holds_the_cut_model"] and r["task"] == task
                 and r["optimizer_holds_the_cut_params"] and r["iter"] == MAX_ITERS for r in reports)
    ok = all(same.values()) and checks and reports[0]["world_size"] > 1
    print(json.dumps({"ok": ok, "same": same, "checks": checks}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("classification", "detection"):
        sys.exit(f"usage: {sys.argv[0]} {{classification,detection}} OUT_DIR")
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
