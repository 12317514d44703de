"""Do the two exporters' graphs of one model speed up alike?  The latency profile times TorchScript exports
(fast to make); the export stage ships the dynamo exporter's graph.  Embedded default ViT (random weights:
only the structure is timed), three cuts made from its dependency graph (every group to 0.7 and to 0.5 of
its units, and every group to a random share in [0.2, 1]), each exported both ways; all eight files timed in
one onnxruntime session at batch 1, one thread, in alternating blocks.

    python benchmarks/exporter_graphs.py [--runs 3000] [--rounds 30]

Writes benchmarks/results/exporter_graphs.json and the ``exporter-graphs`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = "configs/embedded/vit_digits.py"


def cut_every_group(graph, share: Callable[[], float]) -> dict[int, list[int]]:
    """``{group id: removed units}``: every prunable group cut to the width nearest ``share()`` of its full
    width (drawn once per group that can be cut, in group order), as ``profile_latency`` picks widths."""
    from cpd.importance.cost import channels_per_unit
    from cpd.prune.latency import width_at, widths_reachable

    removed = {}
    for g in graph.prunable():
        reachable = widths_reachable(g, 8, 0.1)
        if reachable:
            # widths are channels (a head counts its head dimension), as profile_latency picks them
            _, units = width_at(reachable, int(channels_per_unit(g).sum()), share())
            if units:
                removed[g.id] = units
    return removed


def cuts(graph, seed: int = 0) -> dict[str, dict[int, list[int]]]:
    """Name -> ``{group id: removed units}`` of every prunable group cut to a share of its units."""
    rng = np.random.default_rng(seed)
    shares = {"all groups at 0.7": lambda: 0.7, "all groups at 0.5": lambda: 0.5,
              "random shares": lambda: float(rng.uniform(0.2, 1.0))}
    return {name: cut_every_group(graph, share) for name, share in shares.items()}


def measure(runs: int, rounds: int) -> dict:
    """Export the baseline and the cuts both ways and time all files in one session."""
    import onnx

    from cpd import comb
    from cpd.export import compare_latency
    from cpd.export.measure import LatencyMeter
    from cpd.mm import build_model, example_inputs, load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.tasks import task_of
    from cpd.prune.latency import cut_copy

    quiet_console()
    torch.manual_seed(0)
    cfg = load_config(str(ROOT / CONFIG))
    task = task_of(cfg)
    model = build_model(cfg).eval()
    graph = comb(model, (example_inputs(model),), forward_fn=task.train_forward)
    x = example_inputs(model, batch=1)
    models = {"baseline": model} | {name: cut_copy(model, graph, removed) for name, removed in cuts(graph).items()}
    with tempfile.TemporaryDirectory(prefix="cpd-exporters-") as tmp:
        paths, nodes, export_s = {}, {}, {}
        for exporter in ("torchscript", "dynamo"):
            meter = LatencyMeter(model, x, task.infer_forward, warmup=0, runs=1, rounds=1,
                                 workdir=Path(tmp) / exporter, baseline=1.0, exporter=exporter)
            for i, (name, m) in enumerate(models.items()):
                start = time.perf_counter()
                path = meter._export(m, f"{i}.onnx")
                export_s.setdefault(exporter, []).append(time.perf_counter() - start)
                paths[f"{exporter}|{name}"] = path
                nodes[f"{exporter}|{name}"] = len(onnx.load(str(path)).graph.node)
        timing = compare_latency(paths, list(x.shape), 50, runs, rounds, "cpu", 1)
    out = {"runs": runs, "rounds": rounds, "cuts": list(models)[1:], "graphs": {}}
    for exporter in ("torchscript", "dynamo"):
        base = timing[f"{exporter}|baseline"]["median_ms"]
        out["graphs"][exporter] = {
            "baseline_ms": base, "nodes": nodes[f"{exporter}|baseline"],
            "export_s_median": float(np.median(export_s[exporter])),
            "speedup": {name: base / timing[f"{exporter}|{name}"]["median_ms"] for name in out["cuts"]}}
    return out


def section(data: dict) -> str:
    """The markdown of the ``exporter-graphs`` section of docs/benchmarks.md."""
    ts, dy = data["graphs"]["torchscript"], data["graphs"]["dynamo"]
    lines = ["## One model, two exporters (`python benchmarks/exporter_graphs.py`)", "",
             f"Embedded default ViT at 64x64, random weights; onnxruntime CPU, batch 1, one thread, every file "
             f"timed in one session ({data['runs']} runs each in {data['rounds']} alternating blocks); "
             f"{data['machine']}. The latency profile times TorchScript exports; the export stage ships the dynamo "
             "exporter's graph, and the pruner's re-measurements time that graph.", "",
             "| | TorchScript | dynamo (shipped) | dynamo / TorchScript |", "|---|---|---|---|",
             f"| baseline | {ts['baseline_ms']:.3f} ms, {ts['nodes']} nodes | {dy['baseline_ms']:.3f} ms, "
             f"{dy['nodes']} nodes | {dy['baseline_ms'] / ts['baseline_ms']:.3f} |"]
    for name in data["cuts"]:
        a, b = ts["speedup"][name], dy["speedup"][name]
        lines.append(f"| speed-up, {name} | {a:.3f}x | {b:.3f}x | {b / a:.3f} |")
    lines.append(f"| export, median | {ts['export_s_median']:.2f} s | {dy['export_s_median']:.2f} s | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args(argv)
    from benchmarks.report import machine, update_section, write_results

    data = measure(args.runs, args.rounds) | {"machine": machine()}
    write_results("exporter_graphs", data)
    update_section("exporter-graphs", section(data))
    print(section(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
