"""The embedded default config builds, its knobs reach every place they are used, and a tiny run trains."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("mmseg")
pytest.importorskip("sklearn")
pytest.importorskip("PIL")

from cpd.mm import build_model, load_config, output_modules, seg_forward  # noqa: E402
from cpd.mm.train import expand_knobs, train_config  # noqa: E402

pytestmark = pytest.mark.mm

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "embedded" / "vit_digits.py"


def _tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"cpd_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _get(cfg: object, path: str) -> object:
    node = cfg
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_config_builds_the_small_vit() -> None:
    cfg = load_config(CONFIG)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.patch_size, backbone.embed_dims) == ("VisionTransformer", 8, 96)
    assert (backbone.num_layers, backbone.num_heads, backbone.mlp_ratio, backbone.drop_path_rate) == (4, 3, 2, 0.0)
    assert cfg.train_dataloader.batch_size == 32
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.optim_wrapper.optimizer.lr == 2e-3
    model = build_model(cfg)
    assert 300_000 < sum(p.numel() for p in model.parameters()) < 450_000
    outputs = seg_forward(model.eval(), torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 11, 64, 64)]
    assert output_modules(model) == ["decode_head.conv_seg"]


def test_knob_paths_exist_and_hold_the_knob_values() -> None:
    cfg = load_config(CONFIG)
    assert set(cfg.knobs) == {"data_root", "max_iters", "warmup_iters", "val_interval"}
    for name, paths in cfg.knobs.items():
        assert paths and all(_get(cfg, path) == cfg[name] for path in paths), name


def test_knobs_set_every_path_and_explicit_paths_win(tmp_path: Path) -> None:
    options = {"data_root": "/data/x", "max_iters": 40, "val_interval": 20, "train_cfg.val_interval": 10}
    cfg = train_config(CONFIG, work_dir=tmp_path, cfg_options=options, resume=True)
    assert [cfg[k].dataset.data_root for k in ("train_dataloader", "val_dataloader", "test_dataloader")] == [
        "/data/x"
    ] * 3
    assert cfg.train_cfg.max_iters == 40 and cfg.param_scheduler[1].end == 40
    assert cfg.train_cfg.val_interval == 10 and cfg.default_hooks.checkpoint.interval == 20
    assert cfg.work_dir == str(tmp_path) and cfg.resume is True and cfg.launcher == "none"
    assert train_config(CONFIG).work_dir == os.path.join("work_dirs", "vit_digits")


def test_bad_knob_path_and_launcher_are_refused() -> None:
    cfg = load_config(CONFIG)
    cfg.knobs["max_iters"] = ["train_cfg.no_such_key"]
    with pytest.raises(KeyError, match="no_such_key"):
        expand_knobs(cfg, {"max_iters": 5})
    with pytest.raises(ValueError, match="launcher"):
        train_config(CONFIG, launcher="ssh")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback applies without CUDA only")
def test_distributed_without_cuda_uses_gloo_and_no_device_ids() -> None:
    cfg = train_config(CONFIG, launcher="pytorch")
    assert cfg.env_cfg.dist_cfg.backend == "gloo"
    assert cfg.model_wrapper_cfg.type == "MMDistributedDataParallel" and cfg.model_wrapper_cfg.device_ids is None


def test_pixel_shuffle_head_checks_its_arguments() -> None:
    from cpd.mm.heads import PixelShuffleHead

    head = PixelShuffleHead(scale=4, in_channels=8, channels=8, num_classes=3, in_index=0)
    assert head(torch.randn(2, 8, 5, 6)[None].unbind(0)).shape == (2, 3, 20, 24)
    with pytest.raises(ValueError, match="channels"):
        PixelShuffleHead(scale=4, in_channels=8, channels=16, num_classes=3, in_index=0)
    with pytest.raises(ValueError, match="scale"):
        PixelShuffleHead(scale=0, in_channels=8, channels=8, num_classes=3, in_index=0)


def test_dvclive_hook_checks_its_arguments() -> None:
    from cpd.mm.dvclive_hook import DVCLiveLoggerHook

    assert DVCLiveLoggerHook(interval=3, dir="x").interval == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="interval"):
            DVCLiveLoggerHook(interval=bad)
    with pytest.raises(ValueError, match="dir"):
        DVCLiveLoggerHook(dir="")


TINY = [
    "max_iters=5", "warmup_iters=2", "val_interval=5",
    "train_dataloader.batch_size=4", "val_dataloader.batch_size=4", "test_dataloader.batch_size=4",
    "train_dataloader.num_workers=0", "val_dataloader.num_workers=0", "test_dataloader.num_workers=0",
    "train_dataloader.persistent_workers=False", "val_dataloader.persistent_workers=False",
    "test_dataloader.persistent_workers=False",
    "default_hooks.logger.interval=1", "custom_hooks.0.interval=2",
]


def test_five_iterations_train_and_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cpd.data.digit_mosaic import write_mmseg_layout

    data = write_mmseg_layout(tmp_path / "digits", n_train=16, n_val=8, seed=0)
    monkeypatch.chdir(tmp_path)
    live_dir = tmp_path / "live"
    argv = [str(CONFIG), "--work-dir", "work", "--cfg-options", f"data_root={data}",
            f"custom_hooks.0.dir={live_dir}", *TINY]
    assert _tool("train").main(argv) == 0

    work = tmp_path / "work"
    assert (work / "iter_5.pth").is_file()
    best = sorted(work.glob("best_mIoU_iter_*.pth"))
    assert [p.name for p in best] == ["best_mIoU_iter_5.pth"]

    summary = json.loads((live_dir / "metrics.json").read_text())
    assert summary["step"] == 5
    assert {"loss", "lr", "decode.loss_ce"} <= set(summary["train"])
    assert 0.0 <= summary["val"]["mIoU"] <= 100.0
    loss_rows = (live_dir / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert loss_rows[0].split("\t") == ["step", "loss"] and [r.split("\t")[0] for r in loss_rows[1:]] == ["2", "4"]
    # DVCLive only wrote metric files: no dvc.yaml, no DVC repository, no git repository.
    assert not list(tmp_path.rglob("dvc.yaml")) and not (tmp_path / ".dvc").exists()
    assert not (tmp_path / ".git").exists()

    out = tmp_path / "metrics.json"
    test_argv = [str(CONFIG), str(best[0]), "--work-dir", "eval", "--out", str(out), "--cfg-options",
                 f"data_root={data}", *TINY]
    assert _tool("test").main(test_argv) == 0
    metrics = json.loads(out.read_text())
    assert metrics["mIoU"] == pytest.approx(summary["val"]["mIoU"], abs=0.01)
    assert {"aAcc", "mAcc"} <= set(metrics)

    # Resume from iteration 5 and go on to 7: DVCLive keeps the rows logged so far.
    resumed = [*argv[: argv.index("--cfg-options")], "--resume", *argv[argv.index("--cfg-options"):], "max_iters=7"]
    assert _tool("train").main(resumed) == 0
    assert (work / "iter_7.pth").is_file()
    loss_rows = (live_dir / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in loss_rows[1:]] == ["2", "4", "6"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="needs torchrun")
def test_dist_train_runs_two_processes(tmp_path: Path) -> None:
    from cpd.data.digit_mosaic import write_mmseg_layout

    data = write_mmseg_layout(tmp_path / "digits", n_train=16, n_val=8, seed=0)
    options = [f"data_root={data}", *(o.replace("max_iters=5", "max_iters=2").replace("warmup_iters=2", "warmup_iters=1")
                                       .replace("val_interval=5", "val_interval=2")
                                       for o in TINY)]
    env = {**os.environ, "PORT": "29533", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "dist_train.sh"), str(CONFIG), "2", "--work-dir", str(tmp_path / "work"),
         "--cfg-options", *options],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "work" / "iter_2.pth").is_file()
