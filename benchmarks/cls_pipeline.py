"""The embedded classifier end to end, as a user runs it: ``cp profiles/digit_pairs_resnet.yaml params.yaml && dvc repro``.

For each seed, a fresh git + DVC repository holding this checkout's pipeline gets the classification profile with
``train.seed``, ``prune.seed`` and ``distill.seed`` set to the seed (the data stays the profile's), and runs
``dvc repro`` whole: train the baseline, comb, prune to the profile's thresholds while distilling, distill,
evaluate and export. The wall time of each run and its headline metrics (``metrics/summary.json``: top-1 of
baseline, pruned and distilled, params, FLOPs, ONNX latency on onnxruntime) are collected.

    python benchmarks/cls_pipeline.py [--seeds 0 1 2] [--profile profiles/digit_pairs_resnet.yaml] [--keep DIR]

Writes benchmarks/results/cls_pipeline.json and the ``cls-pipeline`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROFILE = ROOT / "profiles" / "digit_pairs_resnet.yaml"
COPIED = ("stages", "configs", "cpd")
FILES = ("dvc.yaml", ".gitignore", ".dvcignore")


def sh(repo: Path, *cmd: str) -> str:
    """Run ``cmd`` in ``repo``; its output, or SystemExit with its last lines when it fails."""
    env = os.environ | {"PYTHONPATH": str(repo), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise SystemExit(f"{' '.join(cmd)} failed in {repo} (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def make_repo(where: Path, params: dict) -> Path:
    """A git + DVC repository at ``where`` with this checkout's pipeline and ``params`` as params.yaml."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        shutil.copytree(ROOT / name, where / name, ignore=ignore)
    for name in FILES:
        shutil.copy(ROOT / name, where / name)
    (where / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(where, "git", "init", "-q")
    sh(where, "git", "config", "user.email", "benchmark@example.com")
    sh(where, "git", "config", "user.name", "Benchmark")
    sh(where, "dvc", "init", "-q")
    sh(where, "dvc", "config", "core.analytics", "false")
    sh(where, "git", "add", ".")
    sh(where, "git", "commit", "-qm", "classification profile")
    return where


def run_seed(profile: dict, seed: int, where: Path) -> dict:
    """``dvc repro`` of the profile with every stage's seed set to ``seed``; its summary and wall time."""
    params = json.loads(json.dumps(profile))
    for section in ("train", "prune", "distill"):
        params[section]["seed"] = seed
    repo = make_repo(where, params)
    t0 = time.perf_counter()
    out = sh(repo, "dvc", "repro")
    seconds = time.perf_counter() - t0
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    exported = json.loads((repo / "metrics" / "export.json").read_text())
    return {"seed": seed, "seconds": seconds, "lines": len(out.splitlines()), "summary": summary,
            "input_shape": exported["latency"]["baseline"]["input_shape"]}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def section(rows: list[dict], profile: Path) -> str:
    """The markdown of the ``cls-pipeline`` section of docs/benchmarks.md."""
    from benchmarks.report import machine

    def cell(values: list[float], scale: float = 1.0, fmt: str = ".1f") -> str:
        m, s = mean_std([v * scale for v in values])
        return f"{m:{fmt}} ± {s:{fmt}}"

    s = [r["summary"] for r in rows]
    size = "x".join(str(v) for v in rows[0].get("input_shape", [])[-2:]) or "input"
    per_seed = "\n".join(
        f"| {r['seed']} | {x['baseline']['top1'] * 100:.1f} | {x['pruned']['top1'] * 100:.1f} | "
        f"{x['distilled']['top1'] * 100:.1f} | {x['distilled']['sparsity']:.4f} | {x['flops_ratio']:.2f}x | "
        f"{x['speedup']:.2f}x | {r['seconds'] / 60:.1f} |"
        for r, x in zip(rows, s))
    gains = [(x["distilled"]["top1"] - x["baseline"]["top1"]) * 100 for x in s]
    return f"""
## The classifier end to end (`python benchmarks/cls_pipeline.py`)

`cp {profile.relative_to(ROOT)} params.yaml && dvc repro` in a fresh repository per seed (train, prune and distill
seeded with it; the same 1,000 training and 1,000 validation scenes): top-1 (%) of the baseline, of the model
pruned to the profile's last threshold (parameters, while distilling) and of the distilled model; the FLOPs
ratio and the measured ONNX speed-up (onnxruntime, batch 1, one thread, baseline and distilled timed in
alternating blocks in one run) of the distilled model; the wall time of the whole `dvc repro`. {machine()}.

| seed | baseline | pruned | distilled | params sparsity | FLOPs ratio | ONNX speed-up | minutes |
|---|---|---|---|---|---|---|---|
{per_seed}
| mean ± sd | {cell([x['baseline']['top1'] for x in s], 100)} | {cell([x['pruned']['top1'] for x in s], 100)} | \
{cell([x['distilled']['top1'] for x in s], 100)} | {cell([x['distilled']['sparsity'] for x in s], 1, '.4f')} | \
{cell([x['flops_ratio'] for x in s], 1, '.2f')}x | {cell([x['speedup'] for x in s], 1, '.2f')}x | \
{cell([r['seconds'] / 60 for r in rows])} |

Distilled minus baseline top-1: {', '.join(f'{d:+.1f}' for d in gains)} points (mean
{statistics.mean(gains):+.1f}). FLOPs and latency are those of one {size} image (the size the export stage
times at).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--profile", type=Path, default=PROFILE)
    ap.add_argument("--keep", type=Path, help="run in DIR/seed-N and keep the repositories (default: a temp dir)")
    ap.add_argument("--no-doc", action="store_true", help="write the results JSON only")
    args = ap.parse_args(argv)
    from benchmarks.report import machine, update_section, write_results

    profile = yaml.safe_load(args.profile.read_text())
    rows = []
    with tempfile.TemporaryDirectory(prefix="cls-pipeline-") as tmp:
        base = args.keep or Path(tmp)
        for seed in args.seeds:
            where = base / f"seed-{seed}"
            if where.exists():
                shutil.rmtree(where)
            where.mkdir(parents=True)
            rows.append(run_seed(profile, seed, where))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "summary"} |
                             {"top1": [rows[-1]["summary"][m]["top1"] for m in ("baseline", "pruned", "distilled")],
                              "speedup": rows[-1]["summary"]["speedup"]}), flush=True)
    write_results("cls_pipeline", {"profile": str(args.profile.resolve().relative_to(ROOT)), "runs": rows,
                                   "machine": machine()})
    if not args.no_doc:
        update_section("cls-pipeline", section(rows, args.profile.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
