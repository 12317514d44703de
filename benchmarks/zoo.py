"""Run ``cpd check`` over the configs shipped with mmseg, mmpretrain and mmdet, one architecture each; write docs/zoo.md.

Configs that differ only in dataset or schedule share an architecture: they are grouped by their model
config with dataset- and schedule-specific keys removed (``num_classes``, checkpoints, train/test settings,
data preprocessor size), and one config per architecture is checked, through its task's training forward
(see ``cpd.mm.tasks``).  Each check runs in its own subprocess with a time limit; results are appended to
one JSON-lines cache per library, so an interrupted sweep resumes.  docs/zoo.md gets one section per library
whose cache exists.

    nice -n 10 python benchmarks/zoo.py [--library mmseg|mmpretrain|mmdet] [--limit N] [--timeout 300]
                                        [--shard I/N] [--retry FAMILY ...]
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
SIZES = (64, 128, 224, 256, 512)  # 224: classifiers whose attention biases fix 7x7 maps (EfficientFormer)
#: library -> (task it serves, version checked, its cache under benchmarks/results/)
LIBRARIES = {"mmseg": ("segmentation", "mmsegmentation 1.2.2", "zoo.jsonl"),
             "mmpretrain": ("classification", "mmpretrain 1.2.0", "zoo_mmpretrain.jsonl"),
             "mmdet": ("detection", "mmdet 3.3.0", "zoo_mmdet.jsonl")}
DROP_KEYS = {"num_classes", "pretrained", "init_cfg", "train_cfg", "test_cfg", "data_preprocessor", "loss_decode",
             "sampler", "checkpoint", "out_channels", "ignore_index", "threshold", "align_corners"}


#: keys that change training, not structure, in mmpretrain and mmdet configs (mmseg's grouping stays as it was)
TRAINING_KEYS = {"loss", "loss_cls", "loss_bbox", "loss_centerness", "loss_obj", "loss_dfl", "loss_iou", "cal_acc",
                 "topk", "drop_path_rate", "drop_rate", "attn_drop_rate", "frozen_stages", "norm_eval", "with_cp",
                 "assigner", "sampler", "bbox_coder", "anchor_generator", "prior_generator"}


def _strip(node, drop=frozenset(DROP_KEYS)):
    if isinstance(node, dict):
        return {k: _strip(v, drop) for k, v in sorted(node.items()) if k not in drop}
    if isinstance(node, (list, tuple)):
        return [_strip(v, drop) for v in node]
    return node


def families_first(configs: list[str]) -> list[str]:
    """Reorder so that every family's first architecture comes before any family's second (a partial sweep covers
    the most families)."""
    rank: dict[str, int] = {}
    keyed = []
    for i, config in enumerate(configs):
        fam = family(config)
        keyed.append((rank.get(fam, 0), i, config))
        rank[fam] = rank.get(fam, 0) + 1
    return [config for _, _, config in sorted(keyed)]


def config_name(library: str, rel: str) -> str:
    """The name ``cpd check`` takes for a shipped config (mmseg's bare, as in the existing cache)."""
    return rel if library == "mmseg" else f"{library}::{rel}"


def family(config: str) -> str:
    """The config's folder: its model family."""
    return config.split("::")[-1].split("/")[0]


def architectures(library: str = "mmseg") -> dict[str, list[str]]:
    """Architecture key -> configs (names for ``cpd check``), for every config shipped with ``library``."""
    sys.path.insert(0, str(ROOT))
    from cpd.mm.build import config_root, load_config

    root = config_root(library)
    archs: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = config_name(library, str(path.relative_to(root)))
        if "_base_" in path.relative_to(root).parts:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = load_config(rel).get("model")
        except Exception:  # noqa: BLE001 - a config that does not even load is its own architecture
            model = {"unloadable": rel}
        drop = frozenset(DROP_KEYS) if library == "mmseg" else frozenset(DROP_KEYS | TRAINING_KEYS)
        key = hashlib.sha1(json.dumps(_strip(model.to_dict() if hasattr(model, "to_dict") else model, drop),
                                      sort_keys=True, default=str).encode()).hexdigest()[:12]
        archs.setdefault(key, []).append(rel)
    return archs


def check_one(config: str) -> dict:
    """Build ``config`` at the smallest size that runs, and check it (in this process)."""
    import torch

    from cpd.check import check
    from cpd.mm import load_config
    from cpd.mm.tasks import task_of

    torch.set_num_threads(1)
    row = {"config": config, "family": family(config)}
    t0 = time.perf_counter()
    last = untraceable(load_config(config))
    for size in SIZES if not last else ():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cfg = load_config(config)
                task = task_of(cfg)
                model = task.build_model(cfg, input_size=(size, size))
                x = task.example_inputs(model, size=(size, size))
                model.eval()
                with torch.no_grad():
                    task.train_forward(model, x)
        except (TypeError, NotImplementedError) as e:  # the task cannot trace this kind of model at any size
            last = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if any(key in last for key in ("single-stage detector", "needs extract_feat and a head",
                                           'missing the required "forward"')):
                break
            last = f"does not run at {size}: {last}"
        except Exception as e:  # noqa: BLE001 - try a larger input, then report the last reason
            last = f"does not run at {size}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            continue
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rep = check(model, (x,), forward_fn=task.train_forward, ratio=0.3, seed=0)
            row.update(rep.to_dict())
            row.update(size=size, status="pass" if rep.ok else "fail", reason="; ".join(rep.failures)[:300])
            break
    if "status" not in row:
        row.update(status="skip", reason=last)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def untraceable(cfg) -> str:
    """Why the config's model is not of a kind its task traces (before building it), or ''.

    mmpretrain also ships self-supervised and multimodal models, mmdet two-stage and DETR-style detectors:
    only classifiers and single-stage detectors run a plain tensor forward through every head.
    """
    from cpd.mm.tasks import task_of

    task = task_of(cfg)
    kind = cfg.model.get("type")
    cls = task.registry().get(kind) if isinstance(kind, str) else kind
    if task.name == "classification":
        from mmpretrain.models.classifiers import BaseClassifier

        if not (isinstance(cls, type) and issubclass(cls, BaseClassifier)):
            return f"not a classifier: model type {kind} (self-supervised or multimodal)"
    if task.name == "detection":
        from mmdet.models.detectors import SingleStageDetector

        if not (isinstance(cls, type) and issubclass(cls, SingleStageDetector)):
            return f"{kind} is not a single-stage detector (two-stage, DETR-style, instance or tracking model)"
    return ""


def untraceable_here(config: str) -> str:
    """:func:`untraceable` for a config name, '' when it cannot tell (the subprocess check then decides)."""
    try:
        from cpd.mm import load_config

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return untraceable(load_config(config))
    except Exception:  # noqa: BLE001 - a config this cannot read is the subprocess's to report
        return ""


def check_in_subprocess(config: str, timeout: int, env: dict[str, str]) -> dict:
    """:func:`check_one` in a subprocess of its own (``--one``) with a time limit; its row, or a crash or
    timeout row."""
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", config], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"config": config, "family": family(config), "status": "timeout", "reason": f"over {timeout} s"}
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return json.loads(line) if line.startswith("{") else {
        "config": config, "family": family(config), "status": "crash",
        "reason": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def _short_reason(reason: str) -> str:
    """The gist of a skip reason: which package or operator is missing, or which call failed."""
    for key, text in (("single-stage detector", "not a single-stage detector (two-stage, DETR-style, instance "
                                                "segmentation or tracking): its forward needs NMS, RoIAlign or data "
                                                "samples (compiled mmcv ops, absent in mmcv-lite)"),
                      ("needs extract_feat and a head", "not a classifier (self-supervised, multimodal or "
                                                        "headless config)"),
                      ("not a classifier: model type", "not a classifier: a self-supervised or multimodal model"),
                      ('missing the required "forward"', "self-supervised pretraining config: its head has no "
                                                         "forward (no classifier to check)"),
                      ("required positional argument: 'batch_data_samples'", "its query-based head's forward needs "
                                                                              "data samples (no tensor forward)"),
                      ("compiled op", "needs a compiled mmcv op (mmcv-lite has none)"),
                      ("Failed to import custom modules", "needs a package that is not installed"),
                      ("deep_supervision", "its head runs only in predict mode with data samples"),
                      ("optional.txt", "needs optional packages (stable diffusion)"),
                      ("got tuple", "its cascade head takes point samples, not a tensor forward")):
        if key in reason:
            return text
    return reason.split(": ", 1)[-1][:120]


def library_section(library: str, rows: list[dict], archs: dict[str, list[str]]) -> list[str]:
    """The docs/zoo.md section of one library: a summary, the reasons for what is not checkable, one row each."""
    task, version, _ = LIBRARIES[library]
    done = [r for r in rows if r["status"] in ("pass", "fail")]
    passed = [r for r in done if r["status"] == "pass"]
    skipped = [r for r in rows if r["status"] in ("skip", "timeout", "crash")]
    missing = sum(1 for cfgs in archs.values() if cfgs[0] not in {r["config"] for r in rows})
    lines = [
        f"## {task.capitalize()}: {version}",
        "",
        f"- architectures: {len(archs)} ({sum(len(v) for v in archs.values())} configs)"
        + (f"; **{missing} not swept yet**" if missing else ""),
        f"- checked: {len(done)}; **pass: {len(passed)} ({100 * len(passed) / max(len(done), 1):.1f}% of checked)**",
        f"- not checkable here: {len(skipped)} (the model does not build, or its heads do not run a plain "
        "tensor forward, on CPU with mmcv-lite):",
    ]
    reasons: dict[str, list[str]] = {}
    for r in skipped:
        reasons.setdefault(_short_reason(str(r.get("reason", r["status"]))), []).append(r["family"])
    for reason, fams in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  - {len(fams)} ({', '.join(sorted(set(fams)))}): {reason}")
    failed = [r for r in done if r["status"] == "fail"]
    if failed:
        lines.append(f"- failed: {len(failed)} ({', '.join(sorted({r['family'] for r in failed}))}); reasons in the table")
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
    return lines + [""]


def write_markdown(sections: dict[str, tuple[list[dict], dict[str, list[str]]]], path: Path) -> None:
    """docs/zoo.md: what the sweep does, then one section per library (see :func:`library_section`)."""
    lines = [
        "# cpd check over the OpenMMLab model zoos",
        "",
        "Generated by `python benchmarks/zoo.py --library LIB`. Every config shipped with a library is grouped by "
        "architecture (configs that differ only in dataset or schedule share one); one config per architecture is "
        "built on CPU with random weights at the smallest of 64/128/224/256/512 px (mmseg rows: 64/128/256/512) that runs, combed through its "
        "task's training forward (segmentation: every decode and auxiliary head; classification: the head's "
        "logits; detection: the head's outputs for every level), and 30% of the units of every prunable group are "
        "cut at random. `pass` means every invariant of `cpd check` held: output shapes kept, outputs equal to the "
        "masked reference (dead channels), forward and backward run. ONNX is left out of the sweep for time (see "
        "tests and `cpd check`).",
        "",
    ]
    for library, (rows, archs) in sections.items():
        lines += library_section(library, rows, archs)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


def read_cache(path: Path) -> dict[str, dict]:
    """Config -> its last row in a JSON-lines cache (empty when the file does not exist)."""
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[row["config"]] = row
    return done


def _index(cache: Path) -> Path:
    return cache.with_name(cache.stem + ".archs.json")


def _read_index(cache: Path, library: str) -> dict[str, list[str]]:
    """The architectures of ``library`` as its last sweep grouped them (regrouped when it saved none)."""
    path = _index(cache)
    return json.loads(path.read_text()) if path.exists() else architectures(library)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", choices=list(LIBRARIES), default="mmseg", help="whose shipped configs to sweep")
    ap.add_argument("--limit", type=int, default=0, help="check at most N architectures (0: all)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per architecture")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results",
                    help="folder of the per-library caches")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "zoo.md")
    ap.add_argument("--shard", default="0/1", help="I/N: check every N-th architecture starting at I (parallel runs)")
    ap.add_argument("--retry", nargs="+", default=[], metavar="FAMILY",
                    help="check every cached non-pass (skip, timeout, crash, fail) of these families again "
                         "(after installing what they lacked, or fixing what failed)")
    ap.add_argument("--regroup", action="store_true",
                    help="group the configs into architectures again (else the saved grouping is reused)")
    ap.add_argument("--write-only", action="store_true", help="check nothing: write docs/zoo.md from the caches")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(check_one(args.one)))
        return 0
    cache = args.results / LIBRARIES[args.library][2]
    cache.parent.mkdir(parents=True, exist_ok=True)
    if args.regroup or not _index(cache).exists():
        from cpd.graph.deps_io import write_json_atomic

        archs = architectures(args.library)
        write_json_atomic(archs, _index(cache))  # later runs and the other libraries' sections read it back
    else:
        archs = _read_index(cache, args.library)
    done = read_cache(cache)
    todo = [cfgs[0] for cfgs in archs.values() if cfgs[0] not in done or (
        family(cfgs[0]) in args.retry and done[cfgs[0]]["status"] != "pass")]
    order = {config: i for i, config in enumerate(families_first([cfgs[0] for cfgs in archs.values()]))}
    todo = sorted(todo, key=order.__getitem__)  # ranked over every architecture, so a resumed sweep keeps its order
    index, count = (int(v) for v in args.shard.split("/"))
    todo = todo[index::count]
    if args.limit:
        todo = todo[: args.limit]
    if args.write_only:
        todo = []
    # the checkout's cpd, whatever an installed one points at
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for i, config in enumerate(todo):
        t0 = time.perf_counter()
        why = untraceable_here(config)  # decided from the config and the registry: no subprocess, no model built
        row = ({"config": config, "family": family(config), "status": "skip", "reason": why,
                "seconds": round(time.perf_counter() - t0, 1)} if why else check_in_subprocess(config, args.timeout, env))
        with cache.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[config] = row
        print(f"[{i + 1}/{len(todo)}] {config}: {row['status']} ({time.perf_counter() - t0:.0f} s) "
              f"{row.get('reason', '')[:120]}", flush=True)
    sections = {}
    for library in LIBRARIES:
        lib_cache = args.results / LIBRARIES[library][2]
        rows = read_cache(lib_cache)
        if rows:
            lib_archs = archs if library == args.library else _read_index(lib_cache, library)
            sections[library] = ([rows[c[0]] for c in lib_archs.values() if c[0] in rows], lib_archs)
    write_markdown(sections, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
