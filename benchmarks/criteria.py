"""Which importance criterion keeps the most accuracy?  Both embedded tasks, 50% of parameters removed (``--target``).

For every criterion (hessian, group_fisher, obd, taylor, magnitude, random) and seed: start from the same
trained baseline, prune iteratively while fine-tuning (importance accumulated over every batch of each
interval) until 50% of the parameters (``--target``) are gone (every criterion lands on the target: see the
schedule's landing), cut the model, and measure the task's metric right after pruning (for a model with
batch norm, also on a copy whose batch norms are re-estimated on 20 training batches:
``cpd.prune.reestimate_batch_norm_``) and after a short fine-tune.  A plain PyTorch loop over in-memory scenes
keeps the runs comparable and fast.  Each seed seeds the pruning run (batches, the random criterion), so
criteria are compared seed by seed (paired): the default criterion against each other one.

Two tasks, each an embedded default:

* ``seg``: the ViT of ``configs/embedded/vit_digits.py`` on digit mosaic scenes (64x64, mIoU over 11 classes);
* ``cls``: the quarter-width CIFAR ResNet-18 of ``configs/embedded/resnet_digit_pairs.py`` on digit pairs
  (32x32, the larger of two digits; top-1).

    python benchmarks/criteria.py [--task seg|cls] [--seeds 0 1 2 3 4] [--target 0.5] [--baseline-steps N]
                                  [--prune-steps N] [--tune-steps 200] [--calibration N] [--results NAME]

Writes benchmarks/results/criteria.json (seg) or criteria_cls.json (cls), and the matching section of
docs/benchmarks.md; with ``--results NAME``, benchmarks/results/NAME.json only (``--report NAME`` then writes its
section, named NAME).
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CRITERIA = ("hessian", "group_fisher", "obd", "taylor", "magnitude", "random")
DEFAULT = "obd"  # the default criterion of cpd.prune.PruneConfig
TARGET = 0.5  # the share of the parameters removed, unless --target says otherwise
BN_BATCHES = 20  # training batches of 32 that re-estimate the batch norm statistics after the cut


def seg_scenes(n: int, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (N, 3, 64, 64) and labels (N, 64, 64) of digit mosaic scenes."""
    from cpd.data.digit_mosaic import make_scenes

    img, lab = make_scenes(n, split, seed)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, torch.from_numpy(lab).long()


def cls_scenes(n: int, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (N, 3, 32, 32) and labels (N,) of digit pair scenes (the config's mean and std)."""
    from cpd.data.digit_pairs import make_scenes

    img, lab, _ = make_scenes(n, split, seed)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, torch.from_numpy(lab).long()


def seg_logits(model, x: torch.Tensor) -> torch.Tensor:
    """Decode-head logits resized to the input size."""
    from cpd.mm import seg_forward

    out = seg_forward(model, x)[0]
    return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def cls_logits(model, x: torch.Tensor) -> torch.Tensor:
    """The head's class scores."""
    return model.head(model.extract_feat(x))


def miou(model, x: torch.Tensor, y: torch.Tensor, classes: int = 11) -> float:
    """Mean IoU over ``classes`` on a held-out set (eval mode, batches of 100)."""
    model.eval()
    conf = torch.zeros(classes, classes, dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(x), 100):
            pred = seg_logits(model, x[i:i + 100]).argmax(1)
            conf += torch.bincount(y[i:i + 100].flatten() * classes + pred.flatten(),
                                   minlength=classes * classes).reshape(classes, classes)
    inter = conf.diag().float()
    union = conf.sum(0) + conf.sum(1) - conf.diag()
    return float((inter[union > 0] / union[union > 0]).mean())


def top1(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy on a held-out set (eval mode, batches of 250)."""
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(x), 250):
            right += int((cls_logits(model, x[i:i + 250]).argmax(1) == y[i:i + 250]).sum())
    return right / len(x)


@dataclass(frozen=True)
class Bench:
    """One embedded task: its model, scenes, logits and metric, and the run sizes that suit it.

    Attributes:
        name: ``seg`` or ``cls`` (the ``--task`` value).
        config: the embedded mmengine config whose model is pruned.
        size: the input size the model is built for.
        metric: the metric's name in the tables; ``key`` prefixes its fields in the results.
        scenes: ``scenes(n, split, seed)`` -> (normalised images, labels).
        logits: ``logits(model, x)`` -> what the cross-entropy sees.
        score: ``score(model, x, y)`` -> the metric on held-out scenes.
        results: the results file's name under benchmarks/results/ and the docs section's.
        defaults: the command-line defaults for this task.
    """

    name: str
    config: Path
    size: tuple[int, int]
    metric: str
    key: str
    scenes: Callable[[int, str, int], tuple[torch.Tensor, torch.Tensor]]
    logits: Callable[..., torch.Tensor]
    score: Callable[..., float]
    results: str
    title: str
    defaults: dict = field(default_factory=dict)


BENCHES = {
    "seg": Bench("seg", ROOT / "configs" / "embedded" / "vit_digits.py", (64, 64), "mIoU", "miou", seg_scenes,
                 seg_logits, miou, "criteria", "Embedded segmentation default ViT",
                 dict(train_scenes=6000, test_scenes=500, baseline_steps=2600, baseline_lr=2e-3, prune_steps=100)),
    "cls": Bench("cls", ROOT / "configs" / "embedded" / "resnet_digit_pairs.py", (32, 32), "top-1", "top1",
                 cls_scenes, cls_logits, top1, "criteria_cls",
                 "Embedded classifier (quarter-width CIFAR ResNet-18, digit pairs)",
                 dict(train_scenes=1000, test_scenes=10000, baseline_steps=1500, baseline_lr=2e-3, prune_steps=500)),
}


def batch_loss(bench: Bench, model, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Plain cross-entropy of a random batch of 32 of ``(x, y)``, drawn with ``gen``."""
    idx = torch.randint(0, len(x), (32,), generator=gen)
    return F.cross_entropy(bench.logits(model, x[idx]), y[idx])


def train(bench: Bench, model, x, y, steps: int, lr: float, seed: int, warmup: int = 100, on_step=None) -> None:
    """AdamW (wd 0.05), linear warm-up then cosine, batch 32, plain cross-entropy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
    model.train()
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) /
                                                                         max(steps - warmup, 1)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        loss = batch_loss(bench, model, x, y, gen)
        opt.zero_grad()
        loss.backward()
        if on_step is not None:
            on_step("backward")
        opt.step()
        if on_step is not None and on_step("step"):
            return


def build(bench: Bench):
    """The task's embedded model, built from its config (random weights)."""
    from cpd.mm import build_model, load_config

    return build_model(load_config(str(bench.config)), input_size=bench.size)


def train_forward(model, x: torch.Tensor):
    """Every output of the model's training forward (the one comb traces), through its task."""
    from cpd.mm.tasks import task_of

    return task_of(model).train_forward(model, x)


def prune_run(bench: Bench, base, criterion: str, seed: int, data, args) -> dict:
    """Prune a copy of ``base`` to 50% of its parameters with ``criterion``; the metric after pruning and tuning."""
    from cpd.prune import PruneConfig, Pruner
    from cpd.prune.calibration import accumulate_on

    (xtr, ytr), (xte, yte), calibration = data
    model = copy.deepcopy(base)
    interval = max(1, args.prune_steps // 10)
    cfg = PruneConfig(criterion=criterion, interval=interval, thresholds=(args.target,), metric="params", seed=seed,
                      step_fraction=0.05)
    pruner = Pruner(model, (xtr[:2],), cfg, forward_fn=train_forward)

    gen = torch.Generator().manual_seed(seed + 200)

    def on_step(when: str) -> bool:
        if when == "backward":
            if calibration is not None:
                accumulate_on(pruner, lambda: batch_loss(bench, model, *calibration, gen))
            else:
                pruner.accumulate()
            return False
        pruner.step()
        return pruner.done

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    train(bench, model, xtr, ytr, steps=args.prune_steps * 4, lr=5e-4, seed=seed, warmup=1, on_step=on_step)
    pruner.materialize_()
    pruned = bench.score(model, xte, yte)
    pruned_bn = bn_reestimated_score(bench, model, xtr, xte, yte, seed)
    train(bench, model, xtr, ytr, steps=args.tune_steps, lr=5e-4, seed=seed + 100, warmup=1)
    tuned = bench.score(model, xte, yte)
    params = sum(p.numel() for p in model.parameters())
    return {"criterion": criterion, "seed": seed, "sparsity": pruner.sparsity, "params": params,
            f"{bench.key}_pruned": pruned, f"{bench.key}_tuned": tuned, "seconds": time.perf_counter() - t0,
            **({} if pruned_bn is None else {f"{bench.key}_pruned_bn": pruned_bn})}


def bn_reestimated_score(bench: Bench, model, xtr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor,
                         seed: int) -> float | None:
    """The metric of a copy of the cut ``model`` whose batch norms are re-estimated on ``BN_BATCHES`` training
    batches (None for a model without batch norm); ``model`` itself is left as it is."""
    from cpd.prune.batch_norm import batch_norms, reestimate_batch_norm_

    if not batch_norms(model):
        return None
    copy_ = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed + 300)
    batches = [xtr[torch.randint(0, len(xtr), (32,), generator=gen)] for _ in range(BN_BATCHES)]
    reestimate_batch_norm_(copy_, batches, forward=bench.logits)
    return bench.score(copy_, xte, yte)


def stages(rows: list[dict], key: str) -> list[tuple[str, str]]:
    """(field, name) of the metric's measurements every row holds: after pruning, with the batch norms
    re-estimated after pruning (models with batch norm), after tuning."""
    fields = [(f"{key}_pruned", "pruned"), (f"{key}_pruned_bn", "pruned_bn"), (f"{key}_tuned", "tuned")]
    return [(f, n) for f, n in fields if all(f in r for r in rows)]


def summarize(rows: list[dict], criteria: list[str], key: str) -> dict[str, dict[str, tuple[float, float]]]:
    """Per criterion: (mean, standard deviation) over seeds of the sparsity and of each measurement."""
    out = {}
    for criterion in criteria:
        rs = [r for r in rows if r["criterion"] == criterion]
        out[criterion] = {k: (statistics.mean(r[k] for r in rs), statistics.stdev(r[k] for r in rs) if len(rs) > 1
                              else 0.0) for k in [f for f, _ in stages(rows, key)] + ["sparsity"]}
    return out


def compare(rows: list[dict], criteria: list[str], seeds: list[int], key: str) -> dict[str, dict]:
    """The default criterion against each other one, seed by seed: differences of the metric, and wins."""
    if DEFAULT not in criteria:
        return {}
    by = {(r["criterion"], r["seed"]): r for r in rows}
    out = {}
    for c in criteria:
        if c == DEFAULT:
            continue
        entry: dict = {"n": len(seeds)}
        for field_, name in stages(rows, key):
            diffs = [by[(DEFAULT, s)][field_] - by[(c, s)][field_] for s in seeds]
            entry[name] = {"mean": statistics.mean(diffs), "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                           "wins": sum(d > 0 for d in diffs), "diffs": diffs}
        out[c] = entry
    return out


def baseline(bench: Bench, data, args):
    """The trained baseline: loaded from ``args.baseline`` when it exists, else trained and saved there."""
    from cpd.safe_load import load_torch, save_torch

    base = build(bench)
    if args.baseline.exists():
        base.load_state_dict(load_torch(args.baseline, "baseline"))
        return base
    t0 = time.perf_counter()
    train(bench, base, *data[0], steps=args.baseline_steps, lr=args.baseline_lr, seed=0)
    print(f"baseline trained in {time.perf_counter() - t0:.0f} s", flush=True)
    save_torch(base.state_dict(), args.baseline)
    return base


def section(bench: Bench, base_score: float, summary: dict, paired: dict, args, where: str | None = None) -> str:
    """The markdown of the task's docs/benchmarks.md section (``where``: the machine; default this one)."""
    from benchmarks.report import machine

    k, m = bench.key, bench.metric
    names = {"pruned": f"{m} after pruning", "pruned_bn": f"{m} after pruning, batch norms re-estimated",
             "tuned": f"{m} after short fine-tune"}
    shown = [n for n in names if f"{k}_{n}" in next(iter(summary.values()))]
    table = "\n".join(f"| {c} | {s['sparsity'][0]:.4f} ± {s['sparsity'][1]:.4f} | " + " | ".join(
        f"{s[f'{k}_{n}'][0]:.3f} ± {s[f'{k}_{n}'][1]:.3f}" for n in shown) + " |" for c, s in summary.items())
    pairs = "\n".join(f"| {DEFAULT} − {c} | " + " | ".join(
        f"{p[n]['mean']:+.3f} ± {p[n]['std']:.3f} | {p[n]['wins']}/{p['n']}" for n in shown) + " |"
        for c, p in paired.items())
    head = "| criterion | params sparsity reached | " + " | ".join(names[n] for n in shown) + " |\n|---|---|" + \
        "---|" * len(shown)
    pair_head = "| pair | " + " | ".join(f"{names[n][len(m) + 1:]} | ahead" for n in shown) + " |\n|---|" + \
        "---|---|" * len(shown)
    target = getattr(args, "target", TARGET)
    bn = "" if "pruned_bn" not in shown else (
        f" (and with every batch norm's running statistics re-estimated on {BN_BATCHES} training batches of 32, no "
        "weight changed: `cpd.prune.batch_norm.reestimate_batch_norm_`)")
    command = "python benchmarks/criteria.py" + ("" if bench.name == "seg" else f" --task {bench.name}") + \
        ("" if target == TARGET else f" --target {target}") + \
        (f" --results {args.results}" if getattr(args, "results", None) else "")
    resolution = ""
    if k == "top1":  # a proportion: say what one figure's sampling error is, so seed-by-seed gaps can be read
        error = math.sqrt(base_score * (1 - base_score) / args.test_scenes)
        resolution = f"\nOne top-1 on {args.test_scenes} scenes has a binomial standard error of {error:.3f}."
    return f"""
## Importance criteria, {bench.name} (`{command}`)

{bench.title} (baseline {m} {base_score:.3f} after {args.baseline_steps} steps on {args.train_scenes}
scenes), {target:.0%} of its parameters pruned while fine-tuning ({args.prune_steps}-iteration budget, a pruning step
every {max(1, args.prune_steps // 10)} iterations, importance over every batch of each interval), then cut; {m} on {args.test_scenes} held-out scenes right after the cut{bn} and
after {args.tune_steps} more fine-tuning iterations. Mean ± standard deviation over seeds {args.seeds};
{where or machine()}.

{head}
{table}

Paired by seed (same batches): the default criterion's {m} minus each other's, mean ± standard deviation of
the differences, and on how many seeds the default is ahead.{resolution}

{pair_head}
{pairs}
"""


def report(bench: Bench, name: str | None = None) -> int:
    """Write the docs/benchmarks.md section of a results JSON (the pairs against today's default): the task's,
    or ``name``'s (a ``--results NAME`` run), in a section of that name."""
    import json

    from benchmarks.report import update_section

    name = name or bench.results
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"--report: {path} does not exist (run the benchmark with --results {name} first)")
    saved = json.loads(path.read_text())
    args = argparse.Namespace(**saved["args"])
    criteria = list(dict.fromkeys(r["criterion"] for r in saved["runs"]))
    summary = summarize(saved["runs"], criteria, bench.key)
    paired = compare(saved["runs"], criteria, args.seeds, bench.key)
    update_section(name, section(bench, saved[f"baseline_{bench.key}"], summary, paired, args, saved.get("machine")))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=list(BENCHES), default="seg")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--criteria", nargs="+", default=list(CRITERIA))
    ap.add_argument("--target", type=float, default=TARGET, help="share of the parameters removed (default 0.5)")
    ap.add_argument("--train-scenes", type=int, help="default: the task's (seg 6000, cls 1000: few, so that the baseline stays well short of 100%% top-1)")
    ap.add_argument("--test-scenes", type=int, help="default: the task's (seg 500, cls 10000)")
    ap.add_argument("--baseline-steps", type=int, help="default: the task's (seg 2600, cls 1500)")
    ap.add_argument("--baseline-lr", type=float, help="default: the task's (2e-3)")
    ap.add_argument("--prune-steps", type=int, help="iteration budget of pruning; the interval is a tenth of it "
                    "(default: the task's: seg 100, cls 500, i.e. interval 50, the PruningHook's in the original work's "
                    "configs: the classifier's scores from 10 batches of 32 were too noisy to rank units)")
    ap.add_argument("--calibration", type=int, default=0,
                    help="score the importance on this many calibration scenes (new scenes of the training split's "
                    "digits, never trained on; cpd.prune.calibration.accumulate_on) instead of the training "
                    "batches (default 0: the training batches)")
    ap.add_argument("--tune-steps", type=int, default=200, help="fine-tuning iterations after the cut")
    ap.add_argument("--baseline", type=Path, help="the trained baseline's state dict (trained and saved when missing;"
                    " default benchmarks/results/<results>_baseline.pt)")
    ap.add_argument("--no-doc", action="store_true", help="write the results JSON only")
    ap.add_argument("--results", help="write benchmarks/results/RESULTS.json instead of the task's results file "
                    "(and no docs section): for a variant of the protocol, such as --calibration")
    ap.add_argument("--report", nargs="?", const="", metavar="NAME",
                    help="run nothing: write the docs section again from the task's results JSON, or from "
                    "benchmarks/results/NAME.json into a section named NAME")
    args = ap.parse_args(argv)
    bench = BENCHES[args.task]
    if args.report is not None:
        return report(bench, args.report or None)
    for name, value in bench.defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.baseline is None:
        args.baseline = ROOT / "benchmarks" / "results" / f"{bench.results}_baseline.pt"
    from benchmarks.report import machine, update_section, write_results

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    data = (bench.scenes(args.train_scenes, "train", 0), bench.scenes(args.test_scenes, "val", 1),
            bench.scenes(args.calibration, "train", 2) if args.calibration else None)
    base = baseline(bench, data, args)
    base_score = bench.score(base, *data[1])
    print(f"baseline {bench.metric} {base_score:.3f}", flush=True)
    rows = []
    for criterion in args.criteria:
        for seed in args.seeds:
            row = prune_run(bench, base, criterion, seed, data, args)
            rows.append(row)
            print(row, flush=True)
    summary = summarize(rows, args.criteria, bench.key)
    paired = compare(rows, args.criteria, args.seeds, bench.key)
    saved_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_results(args.results or bench.results, {f"baseline_{bench.key}": base_score, "runs": rows,
                                                   "summary": summary, "paired": paired, "args": saved_args,
                                                   "machine": machine()})
    if not args.no_doc and not args.results:
        update_section(bench.results, section(bench, base_score, summary, paired, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
