"""Is a stored latency profile stale?  Re-time its whole-model cuts now and refit the MACs line.

``python benchmarks/latency.py --reuse`` keeps each architecture's profile from an earlier run and scales its
times by the ratio of the two references (the unpruned model timed then and now).  That holds only if the
machine's state (load, clocks) moved every cut's time in proportion.  This script rebuilds each stored
whole-model cut of ``benchmarks/results/latency.json`` (every group at the profile's width for one fraction,
as ``profile_latency`` cut it), times it against the unpruned model in alternating blocks, and refits the MACs
line ``b`` on the fresh savings beside the stored ones.  Nothing is pruned.

    python benchmarks/latency_retime.py [--arch SegFormer-B0 DeiT-S/UperNet] [--runs 6] [--rounds 2]

Writes benchmarks/results/latency_retime.json; docs/benchmarks.md quotes its figures in the latency reading.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import ARCHS, DEFAULT, SIZE, stored_with_line  # noqa: E402
from benchmarks.report import machine, write_results  # noqa: E402



def retime(name: str, stored: dict, runs: int, rounds: int, warmup: int) -> dict:
    """Fresh savings (shares of the reference) of ``stored``'s whole-model cuts, and the line refitted on them."""
    from cpd import comb
    from cpd.importance.cost import channels_per_unit
    from cpd.mm import build_model, example_inputs, load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.latency import cpu_copy
    from cpd.mm.latency_meter import make_meter
    from cpd.mm.tasks import task_of
    from cpd.prune.latency import cut_copy, fit_macs_line, width_at, widths_reachable

    quiet_console()
    cfg = load_config(ARCHS[name])
    task = task_of(cfg)
    model = build_model(cfg, input_size=SIZE).eval()
    graph = comb(model, (example_inputs(model, size=SIZE, batch=2),), forward_fn=task.train_forward)
    meter = make_meter(model, task.infer_forward, [1, 3, *SIZE], "onnxruntime-cpu", 1, warmup, runs, rounds)
    lm = stored["latency_model"]
    base = lm["baseline_s"]
    cuts, fresh = [], []
    for p in lm["info"]["joint"]:
        removed = {}
        for g in graph.prunable():
            reachable = widths_reachable(g, 8, 0.1)
            if reachable:
                removed[g.id] = width_at(reachable, int(channels_per_unit(g).sum()), p["fraction"])[1]
        share = 1.0 - float(meter(cut_copy(cpu_copy(model), graph, removed))) / meter.baseline
        fresh.append({**p, "measured_saving_s": share * base})
        cuts.append({"fraction": p["fraction"], "macs_share_saved": p["macs_share_saved"],
                     "stored_saving": p["measured_saving_s"] / base, "fresh_saving": share})
        print(f"{name} fraction {p['fraction']:g}: MACs share saved {p['macs_share_saved']:.3f}, saving stored "
              f"{cuts[-1]['stored_saving']:.3f}, now {share:.3f}", flush=True)
    line = fit_macs_line(fresh, base)
    then = lm["info"].get("rescaled_from_baseline_s", base)
    print(f"{name}: MACs line stored {lm['macs_line']:.3f}, refitted now {line:.3f}; reference now "
          f"{meter.baseline * 1e3:.1f} ms, stored times scaled to {then * 1e3:.1f} ms", flush=True)
    return {"arch": name, "reference_ms": meter.baseline * 1e3, "cuts": cuts, "line_stored": lm["macs_line"],
            "line_now": line}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(DEFAULT), choices=sorted(ARCHS))
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    stored = stored_with_line(parser, args.arch)
    torch.manual_seed(0)
    start = time.perf_counter()
    out = [retime(a, stored[a], args.runs, args.rounds, args.warmup) for a in args.arch]
    write_results("latency_retime", {"machine": machine(), "args": vars(args), "results": out,
                                     "seconds": time.perf_counter() - start})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
