"""Would a second rate, for memory-bound work, fix the MACs line's miss on transformers?  Worked out offline.

The latency model's MACs line predicts a cut as ``T0 * (1 - b * s)``, ``s`` the share of counted MACs it saves,
``b`` fitted on uniform whole-model cuts.  On the transformers it predicts 11-15% too much speed for the
pruner's cuts (docs/benchmarks.md), which leave the attention heads whole, so the softmax and the norms (work
no MAC counts) do not shrink as they do in the uniform cuts.  This script counts, for every cut the stored
profile of ``benchmarks/results/latency.json`` timed (each group alone at each width, and every group at once)
and for every model of the table, the share of MACs and the share of *elements* (outputs of every operation
that is neither a matrix product nor a view) it saves, fits ``saving = a * s_macs + c * s_elements`` through
the baseline on the profile's cuts, and predicts the table's models with it beside the stored line.  Nothing is
timed: the measurements are the stored ones.

    python benchmarks/latency_two_rate_check.py [--arch DeiT-S/UperNet PSPNet-R18]

A table model is rebuilt from its per-group widths with units taken from the end of each group, as the
profile cuts them; where that does not give the model's stored MACs (a group whose units cost differently,
like a concat of branches at different resolutions), the row is marked and left out of the errors.
Writes benchmarks/results/latency_two_rate_check.json.  This is the offline check that led to the latency
model's element rate (``profile_latency`` with ``elements``); it reads the profiles as they were stored.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import ARCHS, DEFAULT, SIZE, stored_with_line  # noqa: E402
from benchmarks.report import machine, write_results  # noqa: E402
from cpd.flops import count_work  # noqa: E402

def check(name: str, stored: dict) -> dict:
    """Every profile cut and table model of ``name`` with its shares saved, and both predictions."""
    from cpd import comb
    from cpd.importance.cost import channels_per_unit
    from cpd.mm import build_model, example_inputs, load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.tasks import task_of
    from cpd.prune.latency import cut_copy, width_at, widths_reachable

    quiet_console()
    cfg = load_config(ARCHS[name])
    task = task_of(cfg)
    model = build_model(cfg, input_size=SIZE).eval()
    graph = comb(model, (example_inputs(model, size=SIZE, batch=2),), forward_fn=task.train_forward)
    x = torch.randn(1, 3, *SIZE)

    def work(removed: dict) -> tuple[int, int]:
        return count_work(cut_copy(model, graph, removed) if removed else model, (x,), task.infer_forward)

    m0, e0 = work({})
    groups = {g.id: g for g in graph.prunable()}
    reach = {g: widths_reachable(groups[g], 8, 0.1) for g in groups}
    full = {g: int(channels_per_unit(groups[g]).sum()) for g in groups}
    lm = stored["latency_model"]
    points = lm["info"]["points"]
    base = float(np.median(points["baseline_repeats"]))

    def shares(removed: dict) -> dict:
        m, e = work(removed)
        return {"macs": 1.0 - m / m0, "elements": 1.0 - e / e0}

    fit = []
    for g, curve in points["groups"].items():
        units = dict(reach[int(g)])
        for w, s in zip(curve["widths"], curve["measured"]):
            if w in units:
                fit.append({"cut": f"group {g} at {w}", **shares({int(g): units[w]}), "saving": 1.0 - s / base})
    for p in lm["info"]["joint"]:
        removed = {g: width_at(reach[g], full[g], p["fraction"])[1] for g in groups if reach[g]}
        fit.append({"cut": f"every group at {p['fraction']:g}", **shares(removed),
                    "saving": p["measured_saving_s"] / lm["baseline_s"]})
    a, c = np.linalg.lstsq(np.array([[f["macs"], f["elements"]] for f in fit]),
                           np.array([f["saving"] for f in fit]), rcond=None)[0]
    rows = []
    for key, row in stored["rows"].items():
        removed = {}
        for g, share in row["kept"]["per_group"].items():
            w = round(share * full[int(g)])
            if w < full[int(g)]:
                removed[int(g)] = next(u for width, u in reach[int(g)] if width == w)
        s = shares(removed)
        stored_macs = 1.0 - 1.0 / row["macs_ratio"]
        rows.append({"model": key, **s, "stored_macs": stored_macs, "rebuilt": abs(s["macs"] - stored_macs) < 0.01,
                     "speedup": row["speedup"], "in_run": row.get("measured_in_run"),
                     "line": 1.0 / (1.0 - lm["macs_line"] * stored_macs),
                     "two_rate": 1.0 / (1.0 - a * s["macs"] - c * s["elements"])})
    return {"arch": name, "line": lm["macs_line"], "rates": [float(a), float(c)], "fit_points": len(fit),
            "fit": fit, "rows": rows}


def summary(res: dict) -> str:
    """One line per architecture: each prediction's errors on the latency rows and on every rebuilt row."""
    def errs(key: str, against: str, latency_only: bool) -> list[float]:
        return [r[key] / r[against] - 1.0 for r in res["rows"] if r["rebuilt"] and r[against]
                and (r["model"].startswith("latency") or not latency_only)]

    parts = [f"{res['arch']}: rates a {res['rates'][0]:.3f}, c {res['rates'][1]:.3f} on {res['fit_points']} "
             f"profile cuts (line b {res['line']:.3f})"]
    for key in ("line", "two_rate"):
        lat = " / ".join(f"{e:+.1%}" for e in errs(key, "in_run", True))
        every = errs(key, "speedup", False)
        parts.append(f"{key}: latency rows vs in-run {lat}; all {len(every)} rebuilt rows vs final session, "
                     f"median |error| {np.median(np.abs(every)):.1%}, max {max(map(abs, every)):.1%}")
    left = [r["model"] for r in res["rows"] if not r["rebuilt"]]
    if left:
        parts.append(f"not rebuilt (units from the end do not give the stored MACs): {', '.join(left)}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(DEFAULT), choices=sorted(ARCHS))
    args = parser.parse_args(argv)
    stored = stored_with_line(parser, args.arch)
    torch.manual_seed(0)
    start = time.perf_counter()
    out = []
    for name in args.arch:
        out.append(check(name, stored[name]))
        print(summary(out[-1]), flush=True)
    write_results("latency_two_rate_check", {"machine": machine(), "args": vars(args), "results": out,
                                             "summary": [summary(r) for r in out],
                                             "seconds": time.perf_counter() - start})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
