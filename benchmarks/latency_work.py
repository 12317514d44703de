"""What does a pruned model's measured time follow: its MACs, its parameters, or MACs plus the activation
elements that memory-bound ops write (norms, softmax, activations, adds)?

The latency profile's prior is ``seconds saved = rate * MACs saved``; a prior of MACs plus activation elements
with two fitted rates (a roofline: compute-bound and memory-bound work) is the obvious refinement. This
benchmark says whether it would predict better, before anyone builds it. One model (random weights: only the
structure is timed) is cut ``--cuts`` ways from its dependency graph: every group to a random share of its
width (a third of the cuts in [0.1, 1], a third all-or-floor, a third in [0.4, 1]), widths as the profile picks
them. Each cut's MACs, parameters and activation elements are counted on the cut model (elements: the output
size of every op but the matrix products and convolutions, views excluded), every cut is exported as the
export stage does (dynamo) and all files are timed in one onnxruntime session (CPU, batch 1, one thread,
alternating blocks). Each predictor is a least-squares line with an intercept; its error is leave-one-out.

    python benchmarks/latency_work.py [--arch embedded] [--cuts 24] [--runs 1000] [--rounds 10] [--warmup 20] [--seed 0]

``--arch`` is ``embedded`` (the default ViT at its 64x64) or a name of ``benchmarks/latency.py``'s table (at
512x512). Writes benchmarks/results/latency_work.json (per architecture) and the ``latency-work`` section of
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.exporter_graphs import cut_every_group  # noqa: E402
from benchmarks.report import machine, update_section, write_results  # noqa: E402
from cpd.flops import MacCounter  # noqa: E402

EMBEDDED = "configs/embedded/vit_digits.py"
PREDICTORS = {"MACs": ("macs",), "params": ("params",), "activation elements": ("elements",),
              "MACs + activation elements": ("macs", "elements"), "MACs + params": ("macs", "params")}
RESULTS = ROOT / "benchmarks" / "results" / "latency_work.json"


class ElementCounter(TorchDispatchMode):
    """Counts the elements written by every op that is not a matrix product or a convolution (views excluded:
    an output that shares an input's storage writes nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket.__name__ in MacCounter.HEAVY:
            return out
        read = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        self.elements += sum(o.numel() for o in tree_flatten(out)[0]
                             if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() not in read)
        return out


def count_elements(model, x: torch.Tensor, forward) -> int:
    """Activation elements of one eval forward of ``model`` on ``x`` (see :class:`ElementCounter`)."""
    counter = ElementCounter()
    with torch.no_grad(), counter:
        forward(model, x)
    return counter.elements


def random_cuts(graph, n: int, seed: int) -> dict[str, dict[int, list[int]]]:
    """``n`` cuts ``{group id: removed units}`` (module docstring), named ``cut 0`` ..."""
    rng = np.random.default_rng(seed)
    draws = (lambda: rng.uniform(0.1, 1.0), lambda: float(rng.choice([0.0, 1.0])), lambda: rng.uniform(0.4, 1.0))
    return {f"cut {i}": cut_every_group(graph, draws[i % 3]) for i in range(n)}


def loo_fit(rows: list[dict], columns: tuple[str, ...]) -> dict:
    """Least squares ``ms ~ 1 + columns``: its coefficients and the leave-one-out RMS error."""
    y = np.array([r["ms"] for r in rows])
    x = np.column_stack([np.ones(len(rows))] + [np.array([float(r[c]) for r in rows]) for c in columns])
    errors = []
    for i in range(len(rows)):
        keep = np.arange(len(rows)) != i
        coef, *_ = np.linalg.lstsq(x[keep], y[keep], rcond=None)
        errors.append(float(x[i] @ coef - y[i]))
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return {"coef": [float(c) for c in coef], "loo_rms_ms": float(np.sqrt(np.mean(np.square(errors)))),
            "loo_max_ms": float(np.max(np.abs(errors)))}


def measure(arch: str, cuts: int, runs: int, rounds: int, seed: int, warmup: int = 20) -> dict:
    """Build ``arch``, cut it, count and time every cut; the rows and every predictor's fit."""
    from benchmarks.latency import ARCHS, SIZE
    from cpd import comb
    from cpd.export import compare_latency
    from cpd.export.measure import LatencyMeter
    from cpd.flops import count_macs, count_params
    from cpd.mm import build_model, example_inputs, load_config
    from cpd.mm.console import quiet_console
    from cpd.mm.tasks import task_of
    from cpd.prune.latency import cut_copy

    quiet_console()
    torch.manual_seed(0)
    cfg = load_config(str(ROOT / EMBEDDED) if arch == "embedded" else ARCHS[arch])
    task = task_of(cfg)
    size = None if arch == "embedded" else SIZE
    model = build_model(cfg, input_size=size).eval() if size else build_model(cfg).eval()
    kw = {"size": size} if size else {}
    graph = comb(model, (example_inputs(model, batch=2, **kw),), forward_fn=task.train_forward)
    x = example_inputs(model, batch=1, **kw)
    models = {"baseline": model} | {k: cut_copy(model, graph, r) for k, r in random_cuts(graph, cuts, seed).items()}
    rows = {k: {"macs": count_macs(m, (x,), task.infer_forward), "params": count_params(m),
                "elements": count_elements(m, x, task.infer_forward)} for k, m in models.items()}
    with tempfile.TemporaryDirectory(prefix="cpd-work-") as tmp:
        meter = LatencyMeter(model, x, task.infer_forward, warmup=0, runs=1, rounds=1, workdir=Path(tmp),
                             baseline=1.0, exporter="dynamo")
        paths = {k: meter._export(m, f"{i}.onnx") for i, (k, m) in enumerate(models.items())}
        timing = compare_latency(paths, list(x.shape), warmup, runs, rounds, "cpu", 1)
    for k in rows:
        rows[k]["ms"] = timing[k]["median_ms"]
    listed = [{"name": k, **v} for k, v in rows.items()]
    return {"arch": arch, "input": list(x.shape), "cuts": cuts, "runs": runs, "rounds": rounds, "warmup": warmup,
            "seed": seed,
            "rows": listed, "fits": {name: loo_fit(listed, cols) for name, cols in PREDICTORS.items()}}


def section(results: dict) -> str:
    """The markdown of the ``latency-work`` section of docs/benchmarks.md, one table per architecture."""
    out = ["## What a cut model's time follows (`python benchmarks/latency_work.py`)", "",
           "Random cuts of one model (random weights), each counted (MACs, parameters, activation elements: what "
           "every op but the products writes) and timed with the baseline in one onnxruntime CPU session (batch 1, "
           "one thread, dynamo export); each predictor a least-squares line with an intercept, its error left one "
           f"out. {results['machine']}.", ""]
    for arch, r in results["archs"].items():
        base = next(row for row in r["rows"] if row["name"] == "baseline")
        times = [row["ms"] for row in r["rows"]]
        out += [f"**{arch}** (input {r['input']}, {r['cuts']} cuts, {r['runs']} runs each in {r['rounds']} blocks): "
                f"baseline {base['ms']:.3f} ms, cuts {min(times):.3f}-{max(times):.3f} ms.", "",
                "| predictor | leave-one-out RMS error | of the baseline | largest error |", "|---|---|---|---|"]
        out += [f"| {name} | {f['loo_rms_ms']:.4f} ms | {f['loo_rms_ms'] / base['ms']:.1%} | {f['loo_max_ms']:.4f} ms |"
                for name, f in r["fits"].items()]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="embedded")
    ap.add_argument("--cuts", type=int, default=24)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=20, help="untimed runs per file (a few for 512x512 models)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    held = json.loads(RESULTS.read_text()).get("archs", {}) if RESULTS.exists() else {}
    held[args.arch] = measure(args.arch, args.cuts, args.runs, args.rounds, args.seed, args.warmup)
    results = {"archs": held, "machine": machine()}
    write_results("latency_work", results)
    update_section("latency-work", section(results))
    print(section(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
