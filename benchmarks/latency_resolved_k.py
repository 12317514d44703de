"""What-if on the stored latency benchmark: the interaction ``k`` scales only the unresolved groups.

The latency model multiplies every group's saving by one interaction ``k``, fitted on the whole-model cuts.
This asks, without timing anything, what the predictions of ``benchmarks/results/latency.json`` would be if
the groups whose single-group saving stands out of the noise (more than three times ``noise_s`` at some
width: the measurement checked them) kept their savings as they are, and ``k`` were refitted on the same
whole-model cuts to scale the other groups only.  It prints, per architecture, the old and new ``k``, the
resolved groups and the old and new prediction errors against the speed-up the pruner measured in the run.

    python benchmarks/latency_resolved_k.py

The per-group split of a whole-model cut takes each group's curve at the measured width nearest the cut's
fraction (the narrowest for the floor); a row's overlap is backed out of its stored prediction.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cpd.importance.latency import LatencyModel  # noqa: E402
from cpd.prune.latency import fit_interaction  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "latency.json"


def resolved_groups(lm: LatencyModel) -> set[int]:
    """The groups whose measured single-group saving exceeds three times the profile's noise somewhere."""
    points = lm.info.get("points", {})
    sigma = float(points.get("noise_s", 0.0))
    return {int(g) for g, e in points.get("groups", {}).items()
            if max(lm.baseline - m for m in e["measured"]) > 3 * sigma}


def split(lm: LatencyModel, widths: Mapping[int, float], resolved: set[int]) -> tuple[float, float]:
    """The additive saving of ``widths``, as (unresolved groups' part, resolved groups' part)."""
    return (lm.additive_saving({g: w for g, w in widths.items() if g not in resolved}),
            lm.additive_saving({g: w for g, w in widths.items() if g in resolved}))


def joint_widths(lm: LatencyModel, fraction: float) -> dict[int, float]:
    """Per group, the measured width nearest ``fraction`` of its full width (the narrowest for 0, the floor)."""
    out = {}
    for g, curve in lm.groups.items():
        full = curve.widths[-1]
        widths = curve.widths[:-1] or (full,)
        out[g] = min(widths) if fraction == 0.0 else min(widths, key=lambda w: abs(w - fraction * full))
    return out


def report(result: Mapping) -> str:
    """One line for one architecture of the stored benchmark."""
    lm = LatencyModel.from_dict(result["latency_model"])
    resolved = resolved_groups(lm)
    points = []  # the joint cuts with the resolved groups' savings taken out: k is fitted on the rest
    for j in lm.info.get("joint", []):
        unresolved, checked = split(lm, joint_widths(lm, j["fraction"]), resolved)
        points.append({"additive_saving_s": unresolved, "overlap": j["overlap"],
                       "measured_saving_s": j["measured_saving_s"] - j["overlap"] * checked})
    k = fit_interaction(points)
    errors = []
    for name, row in result["rows"].items():
        if row["metric"] != "latency":
            continue
        widths = {int(g): f * lm.groups[int(g)].widths[-1] for g, f in row["kept"]["per_group"].items()
                  if int(g) in lm.groups}
        total = lm.additive_saving(widths)
        o = (lm.baseline - lm.baseline / row["predicted_speedup"]) / lm.interaction / total if total > 0 else 1.0
        unresolved, checked = split(lm, widths, resolved)
        new = lm.baseline / (lm.baseline - o * (k * unresolved + checked))
        measured = row["measured_in_run"]
        errors.append(f"{name}: {row['predicted_speedup'] / measured - 1:+.0%} -> {new / measured - 1:+.0%}")
    return (f"{result['arch']}: k {lm.interaction:.2f} -> {k:.2f}, resolved groups {sorted(resolved)}; "
            + "; ".join(errors))


def main() -> None:
    """Print the what-if for every architecture of the stored benchmark."""
    for result in json.loads(RESULTS.read_text())["results"]:
        print(report(result))


if __name__ == "__main__":
    main()
