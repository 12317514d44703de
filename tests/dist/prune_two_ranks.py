"""Prune the tiny model under DDP (CPU, gloo) and check every rank ends with the same plan and weights.

    torchrun --nproc_per_node 2 tests/dist/prune_two_ranks.py OUT_DIR [calibration]

Each rank trains ``tests/mm_tiny.py``'s run (two pruning steps, the cut, then fine-tuning under a rebuilt
DDP wrapper) with ``tools/train.py``'s launcher, writes ``OUT_DIR/rank<r>.json`` (plan, pruning history,
a digest of the weights, what the wrapper and optimizer hold), and rank 0 compares them.  With
``calibration`` the importance is scored on the validation scenes (each rank its shard) instead.  Exit
code 0 only if the ranks agree; ``tests/test_mm_pruning_dist.py`` runs it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for mm_tiny
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, when not pip-installed

from mm_tiny import HOOK, PRUNE_CONFIG, calibration_loader, options  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402

from cpd.data.digit_mosaic import write_mmseg_layout  # noqa: E402
from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.rebuild import prune_target  # noqa: E402
from cpd.mm.train import train  # noqa: E402

MAX_ITERS = 6


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main(out: Path, calibration: bool = False) -> int:
    rank = int(os.environ["RANK"])
    data = write_mmseg_layout(out / f"digits-rank{rank}", n_train=16, n_val=8, seed=0)  # the same scenes on each
    hook = dict(HOOK, calibration_dataloader=calibration_loader(data)) if calibration else dict(HOOK)
    runner = train(PRUNE_CONFIG, out / "work", options(data, max_iters=MAX_ITERS, hooks=[hook]), launcher="pytorch")
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    model = prune_target(runner.model)
    held = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g["params"]}
    report = {
        "rank": rank, "world_size": dist.get_world_size(), "iter": runner.iter,
        "wrapped": is_model_wrapper(runner.model), "materialized": hook.materialized,
        "wrapper_holds_the_cut_model": runner.model.module is model,
        "optimizer_holds_the_cut_params": held == {id(p) for p in model.parameters()},
        "removed": hook.plan["removed"] if hook.plan else None,
        "history": [e.to_dict() for e in hook.pruner.history],
        "weights": weights_digest(model),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    dist.barrier()
    if rank != 0:
        return 0
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(dist.get_world_size())]
    same = {k: len({json.dumps(r[k]) for r in reports}) == 1 for k in ("removed", "history", "weights")}
    checks = all(r["wrapped"] and r["materialized"] and r["wrapper_holds_the_cut_model"]
                 and r["optimizer_holds_the_cut_params"] and r["iter"] == MAX_ITERS for r in reports)
    ok = all(same.values()) and checks and reports[0]["world_size"] > 1
    print(json.dumps({"ok": ok, "same": same, "checks": checks}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), calibration=sys.argv[2:] == ["calibration"]))
