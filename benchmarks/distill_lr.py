"""How fast should the distill stage learn?  Its learning rate, swept on one pruned model.

    python benchmarks/distill_lr.py [--lrs 5e-4 1e-3 2e-3 4e-3 8e-3] [--seeds 0 1 2]
    python benchmarks/distill_lr.py --report        # rewrite the docs section from the results JSON

Run in a pipeline checkout after ``dvc repro prune`` (any ``prune`` params): it reads ``outputs/train`` (the
baseline and its config), ``outputs/prune/pruned.pth`` and ``metrics/prune.json``, and the ``distill`` section of
params.yaml.  For every learning rate and seed it runs what the distill stage runs (``stages.distill.distill``:
the same iterations, warm-up, cosine decay, temperature and weight, with ``distill.lr`` and ``distill.seed``
replaced), each in a process of its own, into a scratch folder, and reads
the validation mIoU the run logged at its last iteration.  Writes benchmarks/results/distill_lr.json and the
``distill-lr`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = "distill_lr"


def distill_once(lr: float, seed: int, out: Path) -> None:
    """The distill stage's run at ``lr`` and ``seed`` (the rest from params.yaml), into ``out``."""
    from cpd.pipeline.params import read_section
    from stages.distill import distill

    params = dataclasses.replace(read_section("distill"), lr=lr, seed=seed)
    distill(params, Path("outputs/train"), Path("outputs/prune/pruned.pth"), out)


def section(data: dict) -> str:
    """The docs section of the results ``data``."""
    base = data["baseline_miou"]
    rows = []
    for lr in data["lrs"]:
        vals = [r["miou"] for r in data["runs"] if r["lr"] == lr]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        mean = statistics.mean(vals)
        rows.append(f"| {lr:g} | " + " | ".join(f"{v:.4f}" for v in vals) +
                    f" | {mean:.4f} ± {sd:.4f} | {100 * (base - mean):.1f} |")
    seeds = " | ".join(f"seed {s}" for s in data["seeds"])
    prune = data["prune"]
    return f"""
## The distill stage's learning rate (`python benchmarks/distill_lr.py`)

The embedded default's baseline (validation mIoU {base:.4f}) pruned by the pipeline's prune stage to
{prune['target']} {prune['metric']} sparsity ({prune['criterion']}, pruning while distilling), then distilled as
the distill stage does ({data['iters']} iterations, warm-up {data['warmup_iters']}, cosine decay to zero, T =
{data['temperature']}, alpha = {data['alpha']}) at each peak learning rate, seeds of the distill run
{data['seeds']}; validation mIoU at the last iteration. {data['machine']}; {data['minutes']:.1f} min.

| peak lr | {seeds} | mean ± sd | drop from the baseline (points) |
|---|{'---|' * len(data['seeds'])}---|---|
""" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lrs", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3, 4e-3, 8e-3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--one", nargs=3, metavar=("LR", "SEED", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--report", action="store_true", help="run nothing: rewrite the docs section")
    args = ap.parse_args(argv)
    from benchmarks.report import machine, update_section, write_results

    if args.one:
        distill_once(float(args.one[0]), int(args.one[1]), Path(args.one[2]))
        return 0
    path = ROOT / "benchmarks" / "results" / f"{RESULTS}.json"
    if args.report:
        update_section("distill-lr", section(json.loads(path.read_text())))
        return 0
    for need in ("outputs/train/baseline.pth", "outputs/prune/pruned.pth", "metrics/prune.json", "metrics/train.json"):
        if not Path(need).exists():
            raise SystemExit(f"{need} is missing: run this in a pipeline checkout after `dvc repro prune`")
    from cpd.pipeline.params import read_section
    from cpd.pipeline.stage import limit_threads
    from stages.train import last_val

    limit_threads()  # the runs' thread count (they inherit it), so that machine() names it
    params = read_section("distill")
    prune = json.loads(Path("metrics/prune.json").read_text())
    runs, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distill_lr_") as tmp:
        for lr in args.lrs:
            for seed in args.seeds:
                out = Path(tmp) / f"lr{lr:g}_s{seed}"
                subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", str(lr), str(seed),
                                str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                runs.append({"lr": lr, "seed": seed, "miou": last_val(out / "dvclive")["val_mIoU"]})
                print(runs[-1], flush=True)
    data = {"baseline_miou": json.loads(Path("metrics/train.json").read_text())["val_mIoU"], "runs": runs,
            "lrs": args.lrs, "seeds": args.seeds, "iters": params.max_iters, "warmup_iters": params.warmup_iters,
            "temperature": params.temperature, "alpha": params.alpha,
            "prune": {k: prune[k] for k in ("target", "metric", "criterion")},
            "machine": machine(), "minutes": (time.perf_counter() - start) / 60}
    write_results(RESULTS, data)
    update_section("distill-lr", section(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
