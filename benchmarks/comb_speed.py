"""How long ``comb`` takes on DeiT-S/16 + UperNet at 512x512 on this CPU (target: under 10 s).

    python benchmarks/comb_speed.py [--runs 5] [--size 512]

Writes benchmarks/results/comb_speed.json and the ``comb-speed`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = "vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--config", default=CONFIG)
    args = ap.parse_args(argv)

    from benchmarks.report import machine, update_section, write_results
    from cpd import comb
    from cpd.mm import build_model, example_inputs, load_config, seg_forward

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(load_config(args.config), input_size=(args.size, args.size))
        x = example_inputs(model, size=(args.size, args.size))
        times, phases = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            graph = comb(model, (x,), forward_fn=seg_forward, verify=False)
            t1 = time.perf_counter()
            graph = comb(model, (x,), forward_fn=seg_forward, verify=True)
            t2 = time.perf_counter()
            times.append(t2 - t1)
            phases.append(t1 - t0)
    med, trace_med = statistics.median(times), statistics.median(phases)
    data = {"config": args.config, "input": [2, 3, args.size, args.size], "runs": args.runs,
            "median_s": round(med, 2), "min_s": round(min(times), 2), "max_s": round(max(times), 2),
            "median_trace_only_s": round(trace_med, 2), "groups": len(graph.groups),
            "prunable_groups": len(graph.prunable()), "machine": machine()}
    write_results("comb_speed", data)
    update_section("comb-speed", f"""
## Comb speed (`python benchmarks/comb_speed.py`)

`cpd.comb` on {args.config} (DeiT-S/16 + UperNet, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M
parameters), batch 2 at {args.size}x{args.size}, on {data['machine']}; {args.runs} runs.

| | median | min | max |
|---|---|---|---|
| comb with cut verification (default) | **{med:.2f} s** | {min(times):.2f} s | {max(times):.2f} s |
| trace + grouping only (`verify=False`) | {trace_med:.2f} s | {min(phases):.2f} s | {max(phases):.2f} s |

{data['groups']} groups, {data['prunable_groups']} prunable. Target: under 10 s.
""")
    print(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
