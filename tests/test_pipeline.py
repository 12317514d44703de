"""The DVC pipeline end to end on a tiny setup: ``dvc repro``, a no-op second run, an experiment, bad params.

The repository's ``dvc.yaml``, ``params.yaml``, ``stages/``, ``configs/`` and ``cpd/`` (the code the stages
depend on) are copied into a fresh git + DVC repository; ``params.yaml`` is shrunk to a few scenes, a
2-layer ViT of width 32 and a few iterations per stage.  The whole module takes about a minute and a half
on one busy CPU core.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

for module in ("dvc", "mmseg", "onnx", "onnxruntime", "onnxscript", "sklearn", "matplotlib", "yaml"):
    pytest.importorskip(module)
if shutil.which("git") is None:
    pytest.skip("git is not installed", allow_module_level=True)

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.mm, pytest.mark.timeout(600)]

TINY_CONFIG = """_base_ = './embedded/vit_digits.py'
model = dict(backbone=dict(embed_dims=32, num_layers=2, num_heads=2),
             decode_head=dict(in_channels=32, channels=32))
"""
TINY = {
    "data": {"n_train": 24, "n_val": 8},
    "train": {"config": "configs/tiny.py", "max_iters": 4, "val_interval": 4, "batch_size": 4, "workers": 0},
    "prune": {"thresholds": [0.2, 0.4], "interval": 2, "step_fraction": 0.2, "round_to": 4, "warmup_iters": 1,
              "batch_size": 4, "workers": 0},
    "distill": {"max_iters": 4, "val_interval": 4, "warmup_iters": 1, "batch_size": 4, "workers": 0},
    "evaluate": {"batch_size": 8, "workers": 0},
    "export": {"warmup": 2, "runs": 20, "rounds": 2, "curve": False},
}
STAGES = ("data", "train", "comb", "prune", "distill", "evaluate", "export", "summary")


def run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in ``repo`` (``dvc`` through this interpreter) and return the finished process."""
    command = [sys.executable, "-m", "dvc", *args[1:]] if args[0] == "dvc" else list(args)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=500)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n"
                             f"{done.stderr[-4000:]}")
    return done


def set_params(repo: Path, changes: dict) -> None:
    """Merge ``{section: {key: value}}`` into the repository's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository holding the pipeline with tiny params, after one ``dvc repro``."""
    repo = tmp_path_factory.mktemp("pipeline")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stages", "configs", "cpd"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "configs" / "tiny.py").write_text(TINY_CONFIG)
    set_params(repo, TINY)
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "pipeline-test@example.com")
    run(repo, "git", "config", "user.name", "Pipeline Test")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.analytics", "false")
    run(repo, "git", "add", ".")
    run(repo, "git", "commit", "-qm", "pipeline with tiny params")
    done = run(repo, "dvc", "repro")
    for stage in STAGES:
        assert f"[{stage}] done" in done.stdout, stage
    run(repo, "git", "add", "dvc.lock", "metrics", "plots")
    run(repo, "git", "commit", "-qm", "tiny run")
    return repo


def test_repro_writes_models_metrics_and_plots(repo: Path) -> None:
    evaluation, export, summary = metrics(repo, "evaluate"), metrics(repo, "export"), metrics(repo, "summary")
    for name in ("baseline", "pruned", "distilled"):
        m = evaluation[name]
        assert 0.0 <= m["mIoU"] <= 1.0 and 0.0 <= m["aAcc"] <= 1.0
        assert m["params"] > 0 and m["flops"] > 0
    assert evaluation["baseline"]["params"] > evaluation["distilled"]["params"] == evaluation["pruned"]["params"]
    assert evaluation["pruned"]["sparsity"] >= 0.4 and sorted(evaluation["thresholds"]) == ["0.2", "0.4"]
    assert metrics(repo, "prune")["thresholds"]["0.4"]["sparsity"] >= 0.4

    for name in ("baseline", "distilled"):
        assert export["onnx"][name]["max_abs_diff"] <= 1e-4 + 1e-4 * export["onnx"][name]["max_abs"]
        assert export["onnx"][name]["batches"] == [2, 1]
        lat = export["latency"][name]
        assert lat["batch"] == 1 and lat["runs"] == 20 and lat["median_ms"] <= lat["p90_ms"]
        assert lat["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
        assert (repo / "outputs" / "export" / f"{name}.onnx").is_file()
    assert export["flops_ratio"] > 1.0 and export["speedup"] > 0

    for name in ("baseline", "distilled"):
        assert {"mIoU", "params", "flops", "latency_ms"} <= set(summary[name])
    assert summary["speedup"] == export["speedup"] and summary["flops_ratio"] == export["flops_ratio"]
    for name in ("sparsity.csv", "sparsity.png", "training.png"):
        assert (repo / "plots" / name).stat().st_size > 0
    assert (repo / "outputs" / "train" / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").is_file()


def test_second_repro_does_nothing(repo: Path) -> None:
    assert json.loads(run(repo, "dvc", "status", "--json").stdout) == {}
    done = run(repo, "dvc", "repro")
    assert not [stage for stage in STAGES if f"[{stage}] starting" in done.stdout], done.stdout
    assert json.loads(run(repo, "dvc", "status", "--json").stdout) == {}


def test_exp_run_on_a_sparsity_shows_one_row_per_experiment(repo: Path) -> None:
    done = run(repo, "dvc", "exp", "run", "-n", "sparser", "-S", "prune.thresholds=[0.2,0.6]")
    assert "[train] starting" not in done.stdout and "[prune] starting" in done.stdout
    rows = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    found = {}
    for row in rows:
        for exp in [row, *(e for e in row.get("experiments") or [] for e in e.get("revs", []))]:
            data = (exp.get("data") or {})
            name = data.get("name") or exp.get("name") or data.get("rev")
            summary = data.get("metrics", {}).get("metrics/summary.json", {}).get("data")
            if summary:
                found[name] = summary
    assert "sparser" in found, sorted(found)
    sparse = found["sparser"]
    for name in ("baseline", "distilled"):
        assert {"mIoU", "params", "flops", "latency_ms"} <= set(sparse[name])
    assert "speedup" in sparse and "flops_ratio" in sparse
    assert sparse["distilled"]["sparsity"] >= 0.6
    assert len(found) >= 2  # the workspace or its baseline commit, and the experiment
    run(repo, "git", "checkout", "-q", "--", ".")
    run(repo, "dvc", "checkout", "-q")


@pytest.mark.parametrize("value, message", [
    ([0.3, 1.5], "prune.thresholds=[0.3, 1.5]: 1.5 is not a sparsity in (0, 1)"),
    ([0.4, 0.2], "prune.thresholds=[0.4, 0.2]: must be strictly ascending"),
])
def test_bad_value_stops_the_first_stage_that_reads_it(repo: Path, value: list, message: str) -> None:
    before = (repo / "outputs" / "train" / "baseline.pth").read_bytes()
    original = (repo / "params.yaml").read_text()
    set_params(repo, {"prune": {"thresholds": value}})
    try:
        done = run(repo, "dvc", "repro", check=False)
        assert done.returncode != 0
        assert message in done.stderr, done.stderr[-2000:]
        assert "[prune] starting" in done.stdout and "[distill]" not in done.stdout
        assert (repo / "outputs" / "train" / "baseline.pth").read_bytes() == before
        assert (repo / "outputs" / "comb" / "deps.json").is_file() and (repo / "outputs" / "data").is_dir()
    finally:
        (repo / "params.yaml").write_text(original)
        run(repo, "dvc", "checkout", "-q", check=False)
