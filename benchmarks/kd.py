"""Does distillation recover more mIoU than plain fine-tuning after pruning?  (embedded default, CPU)

    python benchmarks/kd.py                 # the full run (see docs/benchmarks.md for its cost)
    python benchmarks/kd.py --smoke         # a tiny run that checks the script end to end (~1 min)

Steps, all with ``tools/train.py``'s machinery (:func:`cpd.mm.train.train`):

1. write the digit mosaic dataset and train the teacher (``configs/embedded/vit_digits.py``), or reuse
   ``--teacher CKPT``;
2. prune it to ``--sparsity`` with the PruningHook (Hessian, no distillation, ``continue_finetune=False``):
   ``thr_<x>.pth`` is the one pruned model both arms start from;
3. fine-tune that model for ``--finetune-iters`` iterations twice per seed, with the same data order, schedule
   and batch: *plain* (``model=PrunedSegmentor``) and *KD* (``model=Distiller`` with the teacher frozen,
   temperature ``--temperature``, weight ``--alpha``);
4. test every model on the validation scenes; write ``benchmarks/results/kd.json`` and the ``kd-recovery``
   section of docs/benchmarks.md (``--smoke``: ``benchmarks/results/kd_smoke.json`` only; ``--out`` moves
   the JSON, ``--no-doc`` leaves the doc alone).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cpd.mm  # noqa: E402,F401  (the mmcv shim before mmseg)
from mmengine.config import Config, ConfigDict  # noqa: E402

from cpd.data.digit_mosaic import write_mmseg_layout  # noqa: E402
from cpd.mm import load_config  # noqa: E402
from cpd.mm.train import evaluate, train  # noqa: E402

BASE = ROOT / "configs" / "embedded" / "vit_digits.py"
PRUNE = ROOT / "configs" / "embedded" / "vit_digits_prune.py"
KD = ROOT / "configs" / "embedded" / "vit_digits_kd.py"
IMPORTS = ["cpd.mm.digits", "cpd.mm.heads", "cpd.mm.pruned", "cpd.mm.pruning_hook", "cpd.mm.distiller"]
SMOKE_MODEL = {"model.backbone.embed_dims": 32, "model.backbone.num_layers": 2, "model.backbone.num_heads": 2,
               "model.decode_head.in_channels": 32, "model.decode_head.channels": 32}


def loader_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"data_root": str(args.data), "visualizer.vis_backends": []}
    for split in ("train", "val", "test"):
        opts[f"{split}_dataloader.num_workers"] = args.workers
        opts[f"{split}_dataloader.persistent_workers"] = args.workers > 0
    opts["train_dataloader.batch_size"] = args.batch
    if args.smoke:
        opts["default_hooks.logger.interval"] = 5
    return opts


def config(path: Path, args: argparse.Namespace, **changes: Any) -> Config:
    """``path`` with the smoke model sizes (when asked) and ``changes`` set (whole values, not merged)."""
    cfg = load_config(path, SMOKE_MODEL if args.smoke else None)
    for key, value in changes.items():
        cfg[key] = ConfigDict(value) if isinstance(value, dict) else value
    return cfg


def test_miou(runner: Any) -> float:
    return float(runner.test()["mIoU"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    write_mmseg_layout(args.data, args.n_train, args.n_val, 0)
    common = loader_options(args)
    work = args.work
    result: dict[str, Any] = {}

    teacher_cfg = config(BASE, args, custom_hooks=[])
    if args.teacher is None:
        runner = train(teacher_cfg, work / "teacher", {**common, "max_iters": args.teacher_iters,
                                                       "warmup_iters": min(100, max(2, args.teacher_iters // 20)),
                                                       "val_interval": args.teacher_iters})
        args.teacher = work / "teacher" / f"iter_{args.teacher_iters}.pth"
        result["teacher_miou"] = test_miou(runner)
    else:
        result["teacher_miou"] = evaluate(teacher_cfg, args.teacher, work / "teacher_eval", common)["mIoU"]
    result["seconds_teacher"] = time.time() - t0

    t1 = time.time()
    hook = dict(type="PruningHook", priority="LOWEST", interval=args.interval, prune_cfg=None,
                save_sparsity_thr=[args.sparsity], continue_finetune=False, step_fraction=args.step, round_to=8)
    train(config(PRUNE, args, custom_hooks=[hook], load_from=str(args.teacher)), work / "prune",
          {**common, "max_iters": 100 * args.interval, "val_interval": 100 * args.interval})
    pruned = work / "prune" / f"thr_{args.sparsity:g}.pth"
    result["pruned_miou"] = evaluate(config(PRUNE, args, custom_hooks=[]), pruned, work / "prune_eval", common)["mIoU"]
    result["seconds_prune"] = time.time() - t1

    student = dict(type="PrunedSegmentor", checkpoint=str(pruned))
    schedule = {**common, "max_iters": args.finetune_iters, "val_interval": args.finetune_iters,
                "warmup_iters": max(2, args.finetune_iters // 50)}  # LinearLR needs 2+ steps
    for arm in ("plain", "kd"):
        scores, t2 = [], time.time()
        for seed in args.seeds:
            if arm == "plain":
                cfg = config(PRUNE, args, model=student, custom_hooks=[], load_from=None)
            else:
                distiller = dict(type="Distiller", student=student, teacher=teacher_cfg.model.to_dict(),
                                 teacher_checkpoint=str(args.teacher), temperature=args.temperature, alpha=args.alpha)
                cfg = config(KD, args, model=distiller, custom_hooks=[], load_from=None)
            cfg.custom_imports = ConfigDict(imports=IMPORTS, allow_failed_imports=False)
            cfg.randomness = ConfigDict(seed=seed)
            scores.append(test_miou(train(cfg, work / f"{arm}_seed{seed}", schedule)))
        result[f"{arm}_miou"] = scores
        result[f"seconds_{arm}"] = time.time() - t2
    result["seconds_total"] = time.time() - t0
    result["args"] = {k: str(v) for k, v in vars(args).items()}
    return result


def table(result: dict[str, Any]) -> str:
    def cell(xs: list[float]) -> str:
        mean = statistics.fmean(xs)
        return f"{mean:.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{mean:.2f}"

    a = result["args"]
    lines = [f"Embedded default, {a['sparsity']} parameter sparsity (Hessian), {a['finetune_iters']} fine-tuning "
             f"iterations of batch {a['batch']}, seeds {a['seeds']}; KD: T={a['temperature']}, alpha={a['alpha']}.",
             "", "| model | mIoU (%), mean ± std over seeds |", "| --- | --- |",
             f"| teacher (unpruned) | {result['teacher_miou']:.2f} |",
             f"| pruned, before fine-tuning | {result['pruned_miou']:.2f} |",
             f"| pruned + plain fine-tuning | {cell(result['plain_miou'])} |",
             f"| pruned + KD fine-tuning | {cell(result['kd_miou'])} |", "",
             f"Wall time: {result['seconds_total'] / 60:.1f} min (teacher {result['seconds_teacher'] / 60:.1f}, "
             f"pruning {result['seconds_prune'] / 60:.1f}, plain {result['seconds_plain'] / 60:.1f}, "
             f"KD {result['seconds_kd'] / 60:.1f})."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, data and budgets: checks the script only")
    p.add_argument("--data", type=Path, help="dataset folder (default data/generated/digit_mosaic)")
    p.add_argument("--work", type=Path, help="work folder (default work_dirs/bench_kd)")
    p.add_argument("--teacher", type=Path, help="a trained vit_digits checkpoint (default: train one)")
    p.add_argument("--teacher-iters", type=int, default=2000)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--interval", type=int, default=20)
    p.add_argument("--step", type=float, default=0.05, help="sparsity removed per pruning step")
    p.add_argument("--finetune-iters", type=int, default=500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/kd.json)")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = p.parse_args(argv)
    args.n_train, args.n_val = 12000, 1000
    if args.smoke:
        args.n_train, args.n_val, args.teacher_iters, args.interval, args.step = 64, 32, 40, 2, 0.25
        args.finetune_iters, args.seeds, args.batch, args.workers = 10, args.seeds[:1], 8, 0
    tag = "kd_smoke" if args.smoke else "kd"
    args.data = args.data or ROOT / "data" / "generated" / ("digit_mosaic_smoke" if args.smoke else "digit_mosaic")
    args.work = args.work or ROOT / "work_dirs" / f"bench_{tag}"
    args.out = args.out or ROOT / "benchmarks" / "results" / f"{tag}.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    from benchmarks.report import machine, update_section

    result["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    text = table(result)
    print(text)
    if not args.smoke and not args.no_doc:
        update_section("kd-recovery", f"## KD after pruning (`python benchmarks/kd.py`)\n\n{text}\n\nOn {result['machine']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
