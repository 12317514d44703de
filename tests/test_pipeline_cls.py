"""The DVC pipeline on a classifier: ``profiles/digit_pairs_resnet.yaml`` shrunk to a few scenes, a ResNet at
an eighth of its width and a few iterations per stage, run end to end by ``dvc repro`` in a fresh repository."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

for module in ("dvc", "mmpretrain", "onnx", "onnxruntime", "onnxscript", "sklearn", "matplotlib", "yaml"):
    pytest.importorskip(module)
if shutil.which("git") is None:
    pytest.skip("git is not installed", allow_module_level=True)

import yaml  # noqa: E402
from test_pipeline import STAGES, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "digit_pairs_resnet.yaml"
pytestmark = [pytest.mark.mm, pytest.mark.timeout(600)]

TINY_CONFIG = """_base_ = './embedded/resnet_digit_pairs.py'
model = dict(backbone=dict(base_channels=8), head=dict(in_channels=64))
"""
TINY = {
    "data": {"n_train": 32, "n_val": 16},
    "train": {"config": "configs/tiny.py", "max_iters": 4, "val_interval": 4, "batch_size": 8, "workers": 0},
    "prune": {"thresholds": [0.2, 0.4], "interval": 2, "step_fraction": 0.2, "round_to": 4, "warmup_iters": 1,
              "batch_size": 8, "workers": 0},
    "distill": {"max_iters": 4, "val_interval": 4, "warmup_iters": 1, "batch_size": 8, "workers": 0},
    "evaluate": {"batch_size": 16, "workers": 0},
    "export": {"warmup": 2, "runs": 20, "rounds": 2, "curve": False},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository holding the pipeline with the classification profile, shrunk, after ``dvc repro``."""
    repo = tmp_path_factory.mktemp("pipeline-cls")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stages", "configs", "cpd"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "configs" / "tiny.py").write_text(TINY_CONFIG)
    params = yaml.safe_load(PROFILE.read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "pipeline-test@example.com")
    run(repo, "git", "config", "user.name", "Pipeline Test")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.analytics", "false")
    run(repo, "git", "add", ".")
    run(repo, "git", "commit", "-qm", "classification pipeline with tiny params")
    done = run(repo, "dvc", "repro", merge=True)
    for stage in STAGES:
        assert f"[{stage}] done" in done.stdout, stage
    return repo


def metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_the_profile_is_complete_and_valid() -> None:
    from cpd.pipeline.params import SECTIONS, check_params_file

    sections = check_params_file(PROFILE)
    assert set(sections) == set(SECTIONS)
    assert sections["data"].source == "digit_pairs"


def test_a_classification_run_reports_top1_top5_params_and_flops(repo: Path) -> None:
    data, evaluation = metrics(repo, "data"), metrics(repo, "evaluate")
    assert data == {"source": "digit_pairs", "n_train": 32, "n_val": 16}
    assert sorted((repo / "outputs" / "data" / "digit_pairs" / "train").iterdir())[0].name == "0"
    assert evaluation["metric"] == "top1"
    models = [evaluation[name] for name in ("baseline", "pruned", "distilled")]
    models += list(evaluation["thresholds"].values())
    for m in models:
        assert 0.0 <= m["top1"] <= m["top5"] <= 1.0 and m["params"] > 0 and m["flops"] > 0
        assert "mIoU" not in m
    base, pruned, final = evaluation["baseline"], evaluation["pruned"], evaluation["distilled"]
    assert base["params"] > final["params"] == pruned["params"] and base["flops"] > final["flops"]
    assert sorted(evaluation["thresholds"]) == ["0.2", "0.4"]
    assert evaluation["thresholds"]["0.2"]["params"] > evaluation["thresholds"]["0.4"]["params"]
    assert final["sparsity"] >= 0.4 - 0.05


def test_export_and_summary_carry_the_classifiers_metric(repo: Path) -> None:
    export, summary, evaluation = metrics(repo, "export"), metrics(repo, "summary"), metrics(repo, "evaluate")
    assert set(export["onnx"]) == {"baseline", "distilled"}
    assert export["input_shape"] == [1, 3, 32, 32]  # the config's input_size, not the 224x224 fallback
    assert export["speedup"] > 0 and export["flops_ratio"] > 1
    assert summary["metric"] == "top1" and "mIoU_drop" not in summary
    assert summary["top1_drop"] == pytest.approx(evaluation["baseline"]["top1"] - evaluation["distilled"]["top1"])
    header = (repo / "plots" / "sparsity.csv").read_text().splitlines()[0]
    assert header.split(",")[:3] == ["model", "sparsity", "top1"]
    shown = json.loads(run(repo, "dvc", "metrics", "show", "--json").stdout)
    assert "top1_drop" in json.dumps(shown)


def test_the_saved_pruned_models_carry_batch_norm_statistics_of_the_cut_model(repo: Path) -> None:
    from cpd.prune import read_checkpoint

    batches = yaml.safe_load((repo / "params.yaml").read_text())["prune"]["bn_batches"]
    assert batches == 20
    for name in ("thr_0.2.pth", "thr_0.4.pth"):  # saved at iterations 2 and 4: re-estimated, not stale
        _, weights = read_checkpoint(repo / "outputs" / "prune" / name)
        counts = {int(v) for k, v in weights.items() if k.endswith("num_batches_tracked")}
        assert counts == {batches}, (name, counts)
