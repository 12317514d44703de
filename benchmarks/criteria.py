"""Which importance criterion keeps the most accuracy?  Embedded default ViT, 50% of parameters removed.

For every criterion (hessian, group_fisher, obd, taylor, magnitude, random) and seed: start from the same
trained baseline, prune iteratively while fine-tuning (importance accumulated over every batch of each
interval) until 50% of the parameters are gone (every criterion lands on the target: see the schedule's
landing), cut the model, and measure mIoU right after pruning and after a short fine-tune. A plain PyTorch
loop over in-memory digit mosaic scenes keeps the runs comparable and fast. Each seed seeds the pruning run
(batches, the random criterion), so criteria are compared seed by seed (paired): the default criterion
against each other one.

    python benchmarks/criteria.py [--seeds 0 1 2 3 4] [--baseline-steps 2600] [--prune-steps 100] [--tune-steps 200]

Writes benchmarks/results/criteria.json and the ``criteria`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "configs" / "embedded" / "vit_digits.py"
CRITERIA = ("hessian", "group_fisher", "obd", "taylor", "magnitude", "random")
DEFAULT = "hessian"


def scenes(n: int, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (N, 3, 64, 64) and labels (N, 64, 64) of digit mosaic scenes."""
    from cpd.data.digit_mosaic import make_scenes

    img, lab = make_scenes(n, split, seed)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, torch.from_numpy(lab).long()


def logits(model, x: torch.Tensor) -> torch.Tensor:
    """Decode-head logits resized to the input size."""
    from cpd.mm import seg_forward

    out = seg_forward(model, x)[0]
    return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def miou(model, x: torch.Tensor, y: torch.Tensor, classes: int = 11) -> float:
    """Mean IoU over ``classes`` on a held-out set (eval mode, batches of 100)."""
    model.eval()
    conf = torch.zeros(classes, classes, dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(x), 100):
            pred = logits(model, x[i:i + 100]).argmax(1)
            conf += torch.bincount(y[i:i + 100].flatten() * classes + pred.flatten(),
                                   minlength=classes * classes).reshape(classes, classes)
    inter = conf.diag().float()
    union = conf.sum(0) + conf.sum(1) - conf.diag()
    return float((inter[union > 0] / union[union > 0]).mean())


def train(model, x, y, steps: int, lr: float, seed: int, warmup: int = 100, on_step=None) -> None:
    """AdamW (wd 0.05), linear warm-up then cosine, batch 32, plain cross-entropy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
    model.train()
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) /
                                                                         max(steps - warmup, 1)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = F.cross_entropy(logits(model, x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if on_step is not None:
            on_step("backward")
        opt.step()
        if on_step is not None and on_step("step"):
            return


def build():
    """The embedded default model, built from its mmseg config (random weights)."""
    from cpd.mm import build_model, load_config

    return build_model(load_config(str(CONFIG)), input_size=(64, 64))


def prune_run(base, criterion: str, seed: int, data, args) -> dict:
    """Prune a copy of ``base`` to 50% of its parameters with ``criterion``; mIoU after pruning and fine-tune."""
    from cpd.mm import seg_forward
    from cpd.prune import PruneConfig, Pruner

    (xtr, ytr), (xte, yte) = data
    model = copy.deepcopy(base)
    interval = max(1, args.prune_steps // 10)
    cfg = PruneConfig(criterion=criterion, interval=interval, thresholds=(0.5,), metric="params", seed=seed,
                      step_fraction=0.05)
    pruner = Pruner(model, (xtr[:2],), cfg, forward_fn=seg_forward)

    def on_step(when: str) -> bool:
        if when == "backward":
            pruner.accumulate()
            return False
        pruner.step()
        return pruner.done

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    train(model, xtr, ytr, steps=args.prune_steps * 4, lr=5e-4, seed=seed, warmup=1, on_step=on_step)
    pruner.materialize_()
    pruned = miou(model, xte, yte)
    train(model, xtr, ytr, steps=args.tune_steps, lr=5e-4, seed=seed + 100, warmup=1)
    tuned = miou(model, xte, yte)
    params = sum(p.numel() for p in model.parameters())
    return {"criterion": criterion, "seed": seed, "sparsity": pruner.sparsity, "params": params,
            "miou_pruned": pruned, "miou_tuned": tuned, "seconds": time.perf_counter() - t0}


def summarize(rows: list[dict], criteria: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per criterion: (mean, standard deviation) over seeds of mIoU after pruning, after tuning, and sparsity."""
    out = {}
    for criterion in criteria:
        rs = [r for r in rows if r["criterion"] == criterion]
        out[criterion] = {k: (statistics.mean(r[k] for r in rs), statistics.stdev(r[k] for r in rs) if len(rs) > 1
                              else 0.0) for k in ("miou_pruned", "miou_tuned", "sparsity")}
    return out


def compare(rows: list[dict], criteria: list[str], seeds: list[int]) -> dict[str, dict]:
    """The default criterion against each other one, seed by seed: differences of mIoU, and wins."""
    if DEFAULT not in criteria:
        return {}
    by = {(r["criterion"], r["seed"]): r for r in rows}
    out = {}
    for c in criteria:
        if c == DEFAULT:
            continue
        entry: dict = {"n": len(seeds)}
        for key, name in (("miou_pruned", "pruned"), ("miou_tuned", "tuned")):
            diffs = [by[(DEFAULT, s)][key] - by[(c, s)][key] for s in seeds]
            entry[name] = {"mean": statistics.mean(diffs), "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                           "wins": sum(d > 0 for d in diffs), "diffs": diffs}
        out[c] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--criteria", nargs="+", default=list(CRITERIA))
    ap.add_argument("--train-scenes", type=int, default=6000)
    ap.add_argument("--test-scenes", type=int, default=500)
    ap.add_argument("--baseline-steps", type=int, default=2600)
    ap.add_argument("--prune-steps", type=int, default=100, help="iterations over which pruning happens")
    ap.add_argument("--tune-steps", type=int, default=200, help="fine-tuning iterations after the cut")
    ap.add_argument("--baseline", type=Path, default=ROOT / "benchmarks" / "results" / "criteria_baseline.pt")
    args = ap.parse_args(argv)
    from benchmarks.report import machine, update_section, write_results
    from cpd.safe_load import load_torch

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    data = (scenes(args.train_scenes, "train", 0), scenes(args.test_scenes, "val", 1))
    base = build()
    if args.baseline.exists():
        base.load_state_dict(load_torch(args.baseline, "baseline"))
    else:
        t0 = time.perf_counter()
        train(base, *data[0], steps=args.baseline_steps, lr=2e-3, seed=0)
        print(f"baseline trained in {time.perf_counter() - t0:.0f} s", flush=True)
        args.baseline.parent.mkdir(parents=True, exist_ok=True)
        torch.save(base.state_dict(), args.baseline)
    base_miou = miou(base, *data[1])
    print(f"baseline mIoU {base_miou:.3f}", flush=True)
    rows = []
    for criterion in args.criteria:
        for seed in args.seeds:
            row = prune_run(base, criterion, seed, data, args)
            rows.append(row)
            print(row, flush=True)
    summary = summarize(rows, args.criteria)
    paired = compare(rows, args.criteria, args.seeds)
    write_results("criteria", {"baseline_miou": base_miou, "runs": rows, "summary": summary, "paired": paired,
                               "args": vars(args) | {"baseline": args.baseline.name}, "machine": machine()})
    table = "\n".join(
        f"| {c} | {s['sparsity'][0]:.4f} ± {s['sparsity'][1]:.4f} | {s['miou_pruned'][0]:.3f} ± "
        f"{s['miou_pruned'][1]:.3f} | {s['miou_tuned'][0]:.3f} ± {s['miou_tuned'][1]:.3f} |"
        for c, s in summary.items())
    pairs = "\n".join(
        f"| {DEFAULT} − {c} | {p['pruned']['mean']:+.3f} ± {p['pruned']['std']:.3f} | {p['pruned']['wins']}/{p['n']} | "
        f"{p['tuned']['mean']:+.3f} ± {p['tuned']['std']:.3f} | {p['tuned']['wins']}/{p['n']} |"
        for c, p in paired.items())
    update_section("criteria", f"""
## Importance criteria (`python benchmarks/criteria.py`)

Embedded default ViT (baseline mIoU {base_miou:.3f} after {args.baseline_steps} steps), pruned to 50% of its
parameters while fine-tuning ({args.prune_steps}-iteration budget, importance over every batch of each interval),
then cut; mIoU on {args.test_scenes} held-out scenes right after the cut and after {args.tune_steps} more
fine-tuning iterations. Mean ± standard deviation over seeds {args.seeds}; {machine()}.

| criterion | params sparsity reached | mIoU after pruning | mIoU after short fine-tune |
|---|---|---|---|
{table}

Paired by seed (same batches): the default criterion's mIoU minus each other's, mean ± standard deviation of
the differences, and on how many seeds the default is ahead.

| pair | after pruning | ahead | after fine-tune | ahead |
|---|---|---|---|---|
{pairs}
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
