"""DDP on CPU (gloo, 2 processes): every rank takes the same pruning decisions and ends with the same weights,
for the segmentor, the classifier and the detector."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("mmseg")
pytest.importorskip("sklearn")

from cpd.mm import dist_sync  # noqa: E402

pytestmark = pytest.mark.mm
SCRIPT = Path(__file__).resolve().parent / "dist" / "prune_two_ranks.py"
TASK_SCRIPT = SCRIPT.with_name("prune_two_ranks_task.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_ranks(script: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``script args`` in 2 processes under torchrun (gloo on CPU), one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SCRIPT.parents[2]), os.environ.get("PYTHONPATH", "")])}
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", str(free_port()), str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="needs torchrun")
@pytest.mark.parametrize("scored_on", ["training", "calibration"])
def test_two_ranks_prune_identically(tmp_path: Path, scored_on: str) -> None:
    result = two_ranks(SCRIPT, str(tmp_path), *(["calibration"] if scored_on == "calibration" else []))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["removed"] and reports[0]["removed"] == reports[1]["removed"]
    assert reports[0]["history"] == reports[1]["history"] and len(reports[0]["history"]) == 2
    assert reports[0]["weights"] == reports[1]["weights"]
    assert all(r["wrapped"] and r["optimizer_holds_the_cut_params"] for r in reports)
    assert (tmp_path / "work" / "thr_0.4.pth").is_file()


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="needs torchrun")
@pytest.mark.parametrize("task,library", [("classification", "mmpretrain"), ("detection", "mmdet")])
def test_two_ranks_prune_a_classifier_and_a_detector_identically(tmp_path: Path, task: str, library: str) -> None:
    pytest.importorskip(library)
    if task == "detection":
        pytest.importorskip("pycocotools")
    result = two_ranks(TASK_SCRIPT, task, str(tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["task"] == task and r["world_size"] == 2 for r in reports)
    assert reports[0]["removed"] and reports[0]["removed"] == reports[1]["removed"]
    assert reports[0]["history"] == reports[1]["history"] and len(reports[0]["history"]) == 2
    assert reports[0]["weights"] == reports[1]["weights"]
    assert all(r["wrapped"] and r["optimizer_holds_the_cut_params"] for r in reports)
    assert (tmp_path / "work" / "thr_0.4.pth").is_file()
    if task == "classification":  # saved at iterations 2 and 4, the batch norms re-estimated on 3 batches
        from cpd.prune import read_checkpoint

        for name in ("thr_0.2.pth", "thr_0.4.pth"):
            _, weights = read_checkpoint(tmp_path / "work" / name)
            counts = {int(v) for k, v in weights.items() if k.endswith("num_batches_tracked")}
            assert counts == {3}, (name, counts)


def test_disagreeing_ranks_stop_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist_sync, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist_sync, "all_gather_object", lambda mine: [mine, "0" * 16])
    with pytest.raises(RuntimeError, match="ranks disagree on the plan"):
        dist_sync.check_same_("the plan", {"removed": {"1": [0]}})
    monkeypatch.setattr(dist_sync, "all_gather_object", lambda mine: [mine, mine])
    dist_sync.check_same_("the plan", {"removed": {"1": [0]}})


def test_saliency_is_averaged_over_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    class Acc:
        def sums(self) -> list[torch.Tensor]:
            return [torch.ones(2, 3), torch.full((3,), 4.0)]

    calls = []
    monkeypatch.setattr(dist_sync, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist_sync, "all_reduce", lambda t, op: calls.append((tuple(t.shape), op)))
    dist_sync.average_saliency_(Acc())
    assert calls == [((2, 3), "mean"), ((3,), "mean")]
