"""The summary stage's work: one table of the run, the sparsity curve, and the plots as PNG files.

Inputs are the metrics the evaluate and export stages wrote (``metrics/evaluate.json``,
``metrics/export.json``) and the DVCLive folders of the training runs.  Torch-free; matplotlib is
imported only to draw.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLUMNS = ("model", "sparsity", "mIoU", "params", "flops", "latency_ms", "speedup")
#: the metrics each model's row carries beside params and FLOPs (those evaluate measured)
QUALITY = ("mIoU", "aAcc", "top1", "top5")


def main_metric(evaluation: Mapping[str, Any]) -> str:
    """The task's main metric of ``metrics/evaluate.json`` (``mIoU`` when the file names none, as before)."""
    return str(evaluation.get("metric", "mIoU"))


def columns(metric: str) -> tuple[str, ...]:
    """The columns of ``sparsity.csv`` for a run whose main metric is ``metric``."""
    return tuple(metric if c == "mIoU" else c for c in COLUMNS)


def summarize(evaluation: Mapping[str, Any], export: Mapping[str, Any]) -> dict[str, Any]:
    """The run in one flat-ish table: each model's metrics, params, FLOPs and latency, and the ratios.

    Args:
        evaluation: ``metrics/evaluate.json`` (``baseline``, ``pruned``, ``distilled``, ``thresholds``).
        export: ``metrics/export.json`` (latency per model, ``speedup``, ``flops_ratio``).

    Returns:
        ``{"target", "baseline": {...}, "pruned": {...}, "distilled": {...}, "<metric>_drop", "speedup",
        "flops_ratio", "params_ratio", "provider"}`` (``metric``: the task's main one, ``mIoU`` or ``top1``,
        named by ``metric`` when it is not mIoU); metrics as fractions, latency in ms (median at batch 1).
    """
    metric = main_metric(evaluation)
    out: dict[str, Any] = {"target": evaluation.get("target")}
    if metric != "mIoU":
        out["metric"] = metric
    for name in ("baseline", "pruned", "distilled"):
        m = evaluation[name]
        row = {k: m[k] for k in (*QUALITY, "params", "flops", "sparsity") if k in m}
        lat = export.get("latency", {}).get("distilled" if name == "pruned" else name)
        if lat is not None:
            row["latency_ms"] = round(lat["median_ms"], 4)
            row["latency_p90_ms"] = round(lat["p90_ms"], 4)
        out[name] = row
    base, final = evaluation["baseline"], evaluation["distilled"]
    out[f"{metric}_drop"] = round(base[metric] - final[metric], 6)
    out["params_ratio"] = round(base["params"] / final["params"], 4)
    out["flops_ratio"] = export.get("flops_ratio", round(base["flops"] / final["flops"], 4))
    out["speedup"] = export.get("speedup")
    out["provider"] = export.get("provider")
    if "flops_graph" in export:
        out["flops_graph"] = export["flops_graph"]
    return out


def sparsity_rows(evaluation: Mapping[str, Any], export: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per model (baseline, the pruned model at each threshold, the distilled one), by sparsity.

    Latency is known for the baseline, the distilled model (which the pruned model at the target
    shares its architecture, hence its latency, with) and, when exported, the other thresholds;
    ``speedup`` is the baseline's median latency over the row's ('' where the latency is unknown).
    """
    latency = {k: v["median_ms"] for k, v in export.get("latency", {}).items()}
    target, metric = evaluation.get("target"), main_metric(evaluation)
    base = latency.get("baseline")
    rows = [_row("baseline", evaluation["baseline"], base, base, metric)]
    for key, m in sorted(evaluation.get("thresholds", {}).items(), key=lambda kv: float(kv[0])):
        name = f"pruned@{key}"
        lat = latency.get("distilled") if target is not None and math.isclose(float(key), target) \
            else latency.get(f"thr_{key}")
        rows.append(_row(name, m, lat, base, metric))
    rows.append(_row("distilled", evaluation["distilled"], latency.get("distilled"), base, metric))
    return rows


def _row(name: str, m: Mapping[str, Any], latency: float | None, base: float | None, metric: str) -> dict[str, Any]:
    """One model's row; the speed-up is a ratio of the export stage's medians (one timing session)."""
    return {"model": name, "sparsity": m["sparsity"], metric: m[metric], "params": m["params"],
            "flops": m["flops"], "latency_ms": "" if latency is None else round(latency, 4),
            "speedup": round(base / latency, 4) if base and latency else ""}


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the rows with the header ``COLUMNS`` (the main metric's column named after the rows' metric)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metric = next((k for k in QUALITY if rows and k in rows[0]), "mIoU")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(metric))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_curve(path: str | os.PathLike[str]) -> tuple[list[float], list[float]]:
    """The ``(steps, values)`` of a DVCLive ``.tsv`` file (``step<TAB>value`` rows); empty if it is missing."""
    path = Path(path)
    if not path.is_file():
        return [], []
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return [], []
    key = [k for k in rows[0] if k not in ("step", "timestamp")][-1]
    return [float(r["step"]) for r in rows], [float(r[key]) for r in rows]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(live_dirs: Mapping[str, str | os.PathLike[str]], path: str | os.PathLike[str]) -> Path:
    """Training loss and validation mIoU (top-1 for a classifier) of each run, from their DVCLive folders."""
    plt = _pyplot()
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 3.8))
    title = "validation mIoU (%)"
    for i, (name, folder) in enumerate(live_dirs.items()):
        metrics, color = Path(folder) / "plots" / "metrics", f"C{i}"  # one colour per run in both panels
        steps, loss = read_curve(metrics / "train" / "loss.tsv")
        if steps:
            ax_loss.plot(steps, loss, color=color, label=name)
        steps, miou = read_curve(metrics / "val" / "mIoU.tsv")
        if not steps:
            steps, miou = read_curve(metrics / "val" / "accuracy" / "top1.tsv")
            title = "validation top-1 (%)" if steps else title
        if steps:
            ax_miou.plot(steps, miou, color=color, marker="o", label=name)
    ax_loss.set(title="training loss", xlabel="iteration of the stage", yscale="log")
    ax_miou.set(title=title, xlabel="iteration of the stage")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(fig, path)


def plot_sparsity(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """The main metric, parameters and latency against sparsity, and the main metric against the measured
    speed-up (pruned models as circles, the distilled one a star)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    metric = next((k for k in QUALITY if rows and k in rows[0]), "mIoU")
    panels = ((metric, metric, 1.0), ("params", "parameters (M)", 1e-6), ("latency_ms", "median latency (ms)", 1.0))
    for ax, (key, label, scale) in zip(axes, panels):
        pruned = [r for r in rows if r["model"] != "distilled" and r[key] != ""]
        ax.plot([r["sparsity"] for r in pruned], [r[key] * scale for r in pruned], "o-", label="baseline / pruned")
        final = [r for r in rows if r["model"] == "distilled" and r[key] != ""]
        if final:
            ax.plot([r["sparsity"] for r in final], [r[key] * scale for r in final], "*", markersize=14,
                    label="distilled")
        ax.set(xlabel="parameter sparsity", ylabel=label, title=f"{label} vs sparsity")
        ax.grid(alpha=0.3)
        ax.legend()
    ax = axes[3]
    for kind, marker, label in (("pruned", "o-", "baseline / pruned"), ("distilled", "*", "distilled")):
        timed = [r for r in rows if (r["model"] == "distilled") == (kind == "distilled") and r["speedup"] != ""]
        if timed:
            ax.plot([r["speedup"] for r in timed], [r[metric] for r in timed], marker,
                    markersize=14 if kind == "distilled" else 6, label=label)
    ax.set(xlabel="measured speed-up (x)", ylabel=metric, title=f"{metric} vs measured speed-up")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _save(fig, path)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # no timestamp in the file, so equal plots give equal bytes
    fig.savefig(path, dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
