"""DDP on CPU (gloo, 2 processes): every rank takes the same pruning decisions and ends with the same weights."""
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="needs torchrun")
def test_two_ranks_prune_identically(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SCRIPT.parents[2]), os.environ.get("PYTHONPATH", "")])}
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", str(free_port()), str(SCRIPT), str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["removed"] and reports[0]["removed"] == reports[1]["removed"]
    assert reports[0]["history"] == reports[1]["history"] and len(reports[0]["history"]) == 2
    assert reports[0]["weights"] == reports[1]["weights"]
    assert all(r["wrapped"] and r["optimizer_holds_the_cut_params"] for r in reports)
    assert (tmp_path / "work" / "thr_0.4.pth").is_file()


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
