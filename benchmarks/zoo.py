"""Run ``cpd check`` over every mmseg config that builds on CPU, one architecture each, and write docs/zoo.md.

Configs that differ only in dataset or schedule share an architecture: they are grouped by their model
config with dataset- and schedule-specific keys removed (``num_classes``, checkpoints, train/test settings,
data preprocessor size), and one config per architecture is checked.  Each check runs in its own
subprocess with a time limit; results are appended to a JSON-lines cache, so an interrupted sweep resumes.

    python benchmarks/zoo.py [--limit N] [--timeout 300] [--shard I/N] [--cache benchmarks/results/zoo.jsonl]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (64, 128, 256, 512)
DROP_KEYS = {"num_classes", "pretrained", "init_cfg", "train_cfg", "test_cfg", "data_preprocessor", "loss_decode",
             "sampler", "checkpoint", "out_channels", "ignore_index", "threshold", "align_corners"}


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in sorted(node.items()) if k not in DROP_KEYS}
    if isinstance(node, (list, tuple)):
        return [_strip(v) for v in node]
    return node


def architectures() -> dict[str, list[str]]:
    """Architecture key -> configs (relative to mmseg's config root), for every shipped config."""
    sys.path.insert(0, str(ROOT))
    from cpd.mm.build import load_config, mmseg_config_root

    root = mmseg_config_root()
    archs: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        if rel.startswith("_base_"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = load_config(rel).get("model")
        except Exception:  # noqa: BLE001 - a config that does not even load is its own architecture
            model = {"unloadable": rel}
        key = hashlib.sha1(json.dumps(_strip(model.to_dict() if hasattr(model, "to_dict") else model),
                                      sort_keys=True, default=str).encode()).hexdigest()[:12]
        archs.setdefault(key, []).append(rel)
    return archs


def check_one(config: str) -> dict:
    """Build ``config`` at the smallest size that runs, and check it (in this process)."""
    import torch

    from cpd.check import check
    from cpd.mm import build_model, example_inputs, load_config, seg_forward

    torch.set_num_threads(1)
    row = {"config": config, "family": config.split("/")[0]}
    t0 = time.perf_counter()
    last = ""
    for size in SIZES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = build_model(load_config(config), input_size=(size, size))
                x = example_inputs(model, size=(size, size))
                model.eval()
                with torch.no_grad():
                    seg_forward(model, x)
        except Exception as e:  # noqa: BLE001 - try a larger input, then report the last reason
            last = f"does not run at {size}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = check(model, (x,), forward_fn=seg_forward, ratio=0.3, seed=0)
        row.update(rep.to_dict())
        row.update(size=size, status="pass" if rep.ok else "fail",
                   reason="; ".join(rep.failures)[:300])
        break
    else:
        row.update(status="skip", reason=last)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _short_reason(reason: str) -> str:
    """The gist of a skip reason: which package or operator is missing, or which call failed."""
    for key, text in (("mmpretrain", "needs mmpretrain (which needs torchvision, not importable beside this torch)"),
                      ("mmdet", "needs mmdet, not installed"),
                      ("in_channels", "needs mmdet's modules (not installed)"),
                      ("compiled op", "needs a compiled mmcv op (mmcv-lite has none)"),
                      ("deep_supervision", "its head runs only in predict mode with data samples"),
                      ("optional.txt", "needs optional packages (stable diffusion)"),
                      ("got tuple", "its cascade head takes point samples, not a tensor forward")):
        if key in reason:
            return text
    return reason.split(": ", 1)[-1][:120]


def write_markdown(rows: list[dict], archs: dict[str, list[str]], path: Path) -> None:
    """docs/zoo.md: a summary and one row per architecture."""
    done = [r for r in rows if r["status"] in ("pass", "fail")]
    passed = [r for r in done if r["status"] == "pass"]
    skipped = [r for r in rows if r["status"] in ("skip", "timeout", "crash")]
    lines = [
        "# cpd check over mmsegmentation's model zoo",
        "",
        "Generated by `python benchmarks/zoo.py`. Every config shipped with mmsegmentation 1.2.2 is grouped by "
        "architecture (configs that differ only in dataset or schedule share one); one config per architecture is "
        "built on CPU with random weights at the smallest of 64/128/256/512 px that runs, combed, and 30% of the "
        "units of every prunable group are cut at random. `pass` means every invariant of `cpd check` held: output "
        "shapes kept, outputs equal to the masked reference (dead channels), forward and backward run. ONNX is "
        "left out of the sweep for time (see tests and `cpd check --onnx`).",
        "",
        f"- architectures: {len(archs)} ({sum(len(v) for v in archs.values())} configs)",
        f"- checked: {len(done)}; **pass: {len(passed)} ({100 * len(passed) / max(len(done), 1):.1f}% of checked)**",
        f"- not checkable here: {len(skipped)} (the model does not build, or its heads do not run a plain "
        "tensor forward, on CPU with mmcv-lite):",
    ]
    reasons: dict[str, list[str]] = {}
    for r in skipped:
        reasons.setdefault(_short_reason(str(r.get("reason", r["status"]))), []).append(r["family"])
    for reason, fams in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  - {len(fams)} ({', '.join(sorted(set(fams)))}): {reason}")
    lines += [
        "",
        "| config | family | size | groups (prunable) | params M before → after | GMACs before → after | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["config"]):
        if r["status"] in ("pass", "fail"):
            lines.append(
                f"| {r['config']} | {r['family']} | {r.get('size')} | {r['groups']} ({r['prunable_groups']}) | "
                f"{r['params_before'] / 1e6:.2f} → {r['params_after'] / 1e6:.2f} | "
                f"{r['macs_before'] / 1e9:.3f} → {r['macs_after'] / 1e9:.3f} | "
                f"{'pass' if r['status'] == 'pass' else 'FAIL: ' + r['reason'].replace('|', '/')} |")
        else:
            lines.append(f"| {r['config']} | {r['family']} | | | | | {r['status']}: "
                         f"{str(r.get('reason', '')).replace('|', '/')[:200]} |")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="check at most N architectures (0: all)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per architecture")
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "results" / "zoo.jsonl")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "zoo.md")
    ap.add_argument("--shard", default="0/1", help="I/N: check every N-th architecture starting at I (parallel runs)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(check_one(args.one)))
        return 0
    archs = architectures()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if args.cache.exists():
        for line in args.cache.read_text().splitlines():
            row = json.loads(line)
            done[row["config"]] = row
    todo = [cfgs[0] for cfgs in archs.values() if cfgs[0] not in done]
    index, count = (int(v) for v in args.shard.split("/"))
    todo = todo[index::count]
    if args.limit:
        todo = todo[: args.limit]
    for i, config in enumerate(todo):
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", config], capture_output=True, text=True,
                                  timeout=args.timeout, cwd=ROOT)
            line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            row = json.loads(line) if line.startswith("{") else {
                "config": config, "family": config.split("/")[0], "status": "crash",
                "reason": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        except subprocess.TimeoutExpired:
            row = {"config": config, "family": config.split("/")[0], "status": "timeout",
                   "reason": f"over {args.timeout} s"}
        with args.cache.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[config] = row
        print(f"[{i + 1}/{len(todo)}] {config}: {row['status']} ({time.perf_counter() - t0:.0f} s) "
              f"{row.get('reason', '')[:120]}", flush=True)
    rows = [done[cfgs[0]] for cfgs in archs.values() if cfgs[0] in done]
    write_markdown(rows, archs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
