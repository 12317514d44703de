"""The DVC pipeline end to end on a tiny setup: ``dvc repro``, a no-op second run, experiments, bad params.

The repository's ``dvc.yaml``, ``params.yaml``, ``stages/``, ``configs/`` and ``cpd/`` (the code the stages
depend on) are copied into a fresh git + DVC repository; ``params.yaml`` is shrunk to a few scenes, a
2-layer ViT of width 32 and a few iterations per stage.  The module takes about four minutes on one busy
CPU core; the kill tests (``slow``) about three more.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
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
    # measured only with prune.metric: latency; at 256x256 the tiny ViT's time is mostly arithmetic, not overhead
    "latency": {"size": [256, 256], "warmup": 2, "runs": 10, "rounds": 2, "align": False},
}
STAGES = ("data", "train", "comb", "latency", "prune", "distill", "evaluate", "export", "summary")
#: Part of the line in which each stage prints its result.
RESULTS = {"data": "data root: ", "train": "baseline: ", "comb": "prunable -> ", "latency": "skipped: prune.metric",
           "prune": "reached ",
           "distill": "distilled student -> ", "evaluate": "distilled mIoU ", "export": "speed-up ",
           "summary": "mIoU drop "}
#: What the first ``dvc repro`` of the fixture printed (stdout and stderr, in order).
FIRST_REPRO: dict[str, str] = {}


def command_env() -> dict[str, str]:
    """The environment of the commands: one torch thread, no DVC analytics, this interpreter first on PATH."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def run(repo: Path, *args: str, check: bool = True, merge: bool = False) -> subprocess.CompletedProcess:
    """Run a command in ``repo`` (``dvc`` through this interpreter) and return the finished process.

    With ``merge``, stderr goes into stdout in the order printed (``done.stderr`` is then None).
    """
    command = [sys.executable, "-m", "dvc", *args[1:]] if args[0] == "dvc" else list(args)
    done = subprocess.run(command, cwd=repo, env=command_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True, timeout=500)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n"
                             f"{(done.stderr or '')[-4000:]}")
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
    done = run(repo, "dvc", "repro", merge=True)
    FIRST_REPRO["output"] = done.stdout
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


def experiment_summaries(repo: Path) -> dict[str, dict]:
    """``{experiment name (or rev): metrics/summary.json}`` of every row of ``dvc exp show`` that has one."""
    found = {}
    for row in json.loads(run(repo, "dvc", "exp", "show", "--json").stdout):
        for exp in [row, *(e for e in row.get("experiments") or [] for e in e.get("revs", []))]:
            data = (exp.get("data") or {})
            name = data.get("name") or exp.get("name") or data.get("rev")
            summary = data.get("metrics", {}).get("metrics/summary.json", {}).get("data")
            if summary:
                found[name] = summary
    return found


def test_exp_run_on_a_sparsity_shows_one_row_per_experiment(repo: Path) -> None:
    done = run(repo, "dvc", "exp", "run", "-n", "sparser", "-S", "prune.thresholds=[0.2,0.6]")
    assert "[train] starting" not in done.stdout and "[prune] starting" in done.stdout
    found = experiment_summaries(repo)
    assert "sparser" in found, sorted(found)
    sparse = found["sparser"]
    for name in ("baseline", "distilled"):
        assert {"mIoU", "params", "flops", "latency_ms"} <= set(sparse[name])
    assert "speedup" in sparse and "flops_ratio" in sparse
    assert sparse["distilled"]["sparsity"] >= 0.6
    assert len(found) >= 2  # the workspace or its baseline commit, and the experiment
    run(repo, "git", "checkout", "-q", "--", ".")
    run(repo, "dvc", "checkout", "-q")


#: Appended to cpd/pipeline/report.py (run by the summary stage only): the summary then carries a mark.
MARKED_SUMMARY = """
_unmarked_summarize = summarize


def summarize(*args, **kwargs):
    return {**_unmarked_summarize(*args, **kwargs), "queued_code": 1}
"""


def test_a_queued_experiment_runs_the_code_it_was_queued_with(repo: Path) -> None:
    """Queue an experiment with a code change, revert the workspace, run the queue: the change ran.

    The queue runs the experiment in a temporary copy of the repository at its commit; the stages must
    import that copy's ``cpd``, not the workspace's nor an installed one.
    """
    report = repo / "cpd" / "pipeline" / "report.py"
    original = report.read_text()
    report.write_text(original + MARKED_SUMMARY)
    try:
        run(repo, "dvc", "exp", "run", "--queue", "-n", "queued-code")
    finally:
        report.write_text(original)
    assert run(repo, "git", "status", "--porcelain", "--", "cpd").stdout == ""
    run(repo, "dvc", "queue", "start")
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        status = run(repo, "dvc", "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Success" in status, status + run(repo, "dvc", "queue", "logs", "queued-code", check=False).stdout[-3000:]
    found = experiment_summaries(repo)
    assert found["queued-code"].get("queued_code") == 1, sorted(found["queued-code"])
    assert "queued_code" not in metrics(repo, "summary")  # the workspace never ran the changed code


def test_repro_prints_each_stage_s_progress_and_result_not_library_dumps(repo: Path) -> None:
    output = FIRST_REPRO["output"]
    lines = output.splitlines()
    # Before: 2,586 lines (mmengine's environment and config on every Runner, warnings a dozen times).
    assert len(lines) < 150, output
    for stage, result in RESULTS.items():
        assert [line for line in lines if line.startswith(f"[{stage}] ") and result in line], (stage, output)
    assert "Config:" not in output and "Hooks will be executed" not in output
    repeated = {line: n for line, n in Counter(lines).items() if "warn" in line.lower() and n > 1}
    assert repeated == {}
    logs = [p.read_text() for p in (repo / "outputs" / "train" / "work").rglob("*.log")]
    assert any("Config:" in log and "Hooks will be executed" in log for log in logs)  # still in the log file


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
        hint = "`dvc checkout prune` brings back its last outputs, `git checkout -- metrics/prune.json` the ones in git"
        assert hint in done.stderr, done.stderr[-2000:]
        assert "[prune] starting" in done.stdout and "[distill]" not in done.stdout
        assert (repo / "outputs" / "train" / "baseline.pth").read_bytes() == before
        assert (repo / "outputs" / "comb" / "deps.json").is_file() and (repo / "outputs" / "data").is_dir()
        assert not (repo / "outputs" / "prune" / "pruned.pth").exists()  # DVC removed it before the run
        run(repo, "dvc", "checkout", "prune")  # what the message says
        run(repo, "git", "checkout", "--", "metrics/prune.json")
        assert (repo / "outputs" / "prune" / "pruned.pth").is_file() and (repo / "metrics" / "prune.json").is_file()
        assert json.loads(run(repo, "dvc", "status", "--json").stdout).keys() == {"prune"}  # only its params
    finally:
        (repo / "params.yaml").write_text(original)
        run(repo, "dvc", "checkout", "-q", check=False)
        run(repo, "git", "checkout", "-q", "--", "metrics", "plots", check=False)


#: A line each stage prints while it runs, and how long after it the kill lands: prune's first threshold
#: file is written two iterations before its end; distill's line comes before the Runner is built.
KILL_AFTER = {"prune": ("PruningHook: saved", 0.0), "distill": ("[distill] distilling", 1.0)}


def without_seconds(data: object) -> object:
    """``data`` without the ``seconds`` keys (wall-clock time differs from run to run)."""
    if isinstance(data, dict):
        return {k: without_seconds(v) for k, v in data.items() if k != "seconds"}
    return data


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(KILL_AFTER))
def test_a_stage_killed_midway_reruns_to_the_same_metrics(repo: Path, stage: str) -> None:
    """SIGKILL ``dvc repro`` and its stage midway, then ``dvc repro``: it completes, with the metrics of the
    uninterrupted run and no partial file left.  About a minute and a half per stage.

    The stage's entry is dropped from dvc.lock first, so that DVC must run it (an entry that matches
    the params and deps is checked out from the cache instead, which proves nothing about a rerun).
    """
    before = {name: without_seconds(metrics(repo, name)) for name in ("prune", "distill", "evaluate")}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    del lock["stages"][stage]
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=command_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    trigger, delay = KILL_AFTER[stage]
    try:
        printed = []
        for line in process.stdout:
            printed.append(line)
            if trigger in line:
                break
        time.sleep(delay)
        assert process.poll() is None, "".join(printed)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # dvc, the stage and anything they started
        process.wait()
    assert not (repo / "metrics" / f"{stage}.json").exists(), "".join(printed)  # killed before its result

    done = run(repo, "dvc", "repro", merge=True)
    assert f"[{stage}] done" in done.stdout, done.stdout[-3000:]
    assert json.loads(run(repo, "dvc", "status", "--json").stdout) == {}
    after = {name: without_seconds(metrics(repo, name)) for name in ("prune", "distill", "evaluate")}
    assert after == before
    leftovers = [str(p.relative_to(repo)) for p in repo.rglob("*") if ".partial" in p.name or p.suffix == ".tmp"
                 if p.relative_to(repo).parts[0] not in (".dvc", ".git")]
    assert leftovers == []


def test_latency_metric_prunes_to_a_measured_speed_up(repo: Path) -> None:
    """``prune.metric=latency``: the latency stage measures the model, the prune stage re-measures at each
    threshold, and the experiment runs through export and the summary."""
    from cpd.importance.latency import read_latency_model
    from cpd.prune.pruner import MEASURED_SLACK

    try:
        done = run(repo, "dvc", "exp", "run", "-n", "speed", "-S", "prune.metric=latency",
                   "-S", "prune.thresholds=[0.1,0.2]", merge=True)
        assert "[train] starting" not in done.stdout and "[latency] done" in done.stdout, done.stdout[-3000:]
        lm = read_latency_model(repo / "outputs" / "latency" / "latency.json")
        if lm.runtime == "onnxruntime-cpu":  # provider auto on a machine without CUDA says so
            assert "cannot run CUDA on this machine; timing on the CPU" in done.stdout
        assert lm.input_shape == (1, 3, 256, 256) and lm.groups and lm.baseline > 0
        assert metrics(repo, "latency")["groups"] == len(lm.groups)
        pruning = metrics(repo, "prune")
        assert pruning["metric"] == "latency"
        for t in ("0.1", "0.2"):
            checks = pruning["thresholds"][t]["latency"]["checks"]
            assert checks and all({"predicted", "measured", "seconds", "decided"} <= set(c) for c in checks)
            # the step's decision: its timing, or the mean of two timings of the same model when one said
            # short or past (on this tiny model two timings can differ by more than the threshold itself)
            assert checks[-1]["decided"] >= float(t) - MEASURED_SLACK
            assert pruning["thresholds"][t]["sparsity"] == pytest.approx(checks[-1]["decided"], abs=1e-6)
        assert "speed" in experiment_summaries(repo)
    finally:
        run(repo, "git", "checkout", "-q", "--", ".")
        run(repo, "dvc", "checkout", "-q", check=False)
