"""The pipeline's training configs: baseline, pruning (PruningHook) and distillation (Distiller), built from params."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("mmseg")
yaml = pytest.importorskip("yaml")

from mmengine.config import Config  # noqa: E402

from cpd.mm.recipe import baseline_config, distill_config, dump_config, model_only, prune_config  # noqa: E402
from cpd.pipeline.params import DistillParams, PruneParams, TrainParams  # noqa: E402

pytestmark = pytest.mark.mm

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = str(ROOT / "configs" / "embedded" / "vit_digits.py")
DEIT = "vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py"


def hooks(cfg: Config) -> dict[str, dict]:
    return {h["type"]: h for h in cfg.custom_hooks}


def test_baseline_config_sets_data_schedule_loaders_and_curves(tmp_path: Path) -> None:
    params = TrainParams(config=EMBEDDED, max_iters=300, val_interval=100, batch_size=8, workers=0, seed=3)
    cfg = baseline_config(params, "somewhere/data", tmp_path / "work", tmp_path / "live")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[loader].dataset.data_root == "somewhere/data"
        assert cfg[loader].num_workers == 0 and cfg[loader].persistent_workers is False
    assert cfg.train_dataloader.batch_size == 8 and cfg.val_dataloader.batch_size == 32
    assert cfg.train_cfg.max_iters == 300 and cfg.train_cfg.val_interval == 100
    assert [s.end for s in cfg.param_scheduler] == [100, 300]
    assert cfg.default_hooks.checkpoint.interval == 100 and cfg.default_hooks.checkpoint.save_best is None
    assert hooks(cfg)["DVCLiveLoggerHook"]["dir"] == str(tmp_path / "live")
    assert cfg.randomness.seed == 3 and cfg.work_dir == str(tmp_path / "work") and cfg.load_from is None


def test_a_warm_up_longer_than_a_short_run_is_dropped(tmp_path: Path) -> None:
    cfg = baseline_config(TrainParams(config=EMBEDDED, max_iters=4), "d", tmp_path, tmp_path)
    assert [(s.type, s.begin, s.end) for s in cfg.param_scheduler] == [("LinearLR", 0, 4)]


def test_baseline_config_of_a_shipped_config_without_knobs(tmp_path: Path) -> None:
    cfg = baseline_config(TrainParams(config=DEIT, max_iters=1000, val_interval=500), "data/ade", tmp_path,
                          tmp_path / "live")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[loader].dataset.data_root == "data/ade"
    assert cfg.train_cfg.max_iters == 1000
    assert all(s.end <= 1000 for s in cfg.param_scheduler)
    assert "cpd.mm.dvclive_hook" in cfg.custom_imports.imports


def test_prune_config_drives_the_pruning_hook_with_kd(tmp_path: Path) -> None:
    base = baseline_config(TrainParams(config=EMBEDDED), "d", tmp_path / "t", tmp_path / "tl")
    params = PruneParams(thresholds=[0.3, 0.5], interval=20, step_fraction=0.05, criterion="taylor", lr=1e-3)
    cfg = prune_config(base, params, "b.pth", "deps.json", tmp_path / "out", tmp_path / "work", tmp_path / "live")
    hook = hooks(cfg)["PruningHook"]
    assert hook["thresholds"] == [0.3, 0.5] and hook["interval"] == 20 and hook["criterion"] == "taylor"
    assert hook["prune_cfg"] == "deps.json" and hook["continue_finetune"] is False
    assert hook["out_dir"] == str(tmp_path / "out") and hook["step_fraction"] == 0.05
    assert cfg.model.type == "Distiller" and cfg.model.student == base.model
    assert cfg.model.teacher_checkpoint == cfg.model.student_checkpoint == "b.pth" and cfg.load_from is None
    assert cfg.train_cfg.max_iters == params.pruning.max_iterations >= 20 * 10
    from cpd.prune import PruneConfig
    options = {k: v for k, v in hook.items() if k in PruneConfig.__dataclass_fields__}
    assert PruneConfig.from_dict(options) == params.pruning  # the hook gets the options as data
    assert cfg.optim_wrapper.optimizer.lr == 1e-3 and [s.type for s in cfg.param_scheduler] == ["LinearLR"]
    assert {"cpd.mm.pruning_hook", "cpd.mm.distiller"} <= set(cfg.custom_imports.imports)
    assert base.model.type == "EncoderDecoder"  # the base is not changed

    plain = prune_config(base, PruneParams(kd=False), "b.pth", "deps.json", tmp_path, tmp_path, tmp_path)
    assert plain.model == base.model and plain.load_from == "b.pth"


def test_distill_config_trains_the_pruned_student_with_the_teacher(tmp_path: Path) -> None:
    base = baseline_config(TrainParams(config=EMBEDDED), "d", tmp_path / "t", tmp_path / "tl")
    params = DistillParams(max_iters=400, val_interval=100, temperature=3.0, alpha=0.5, warmup_iters=10)
    cfg = distill_config(base, params, "b.pth", "pruned.pth", tmp_path / "work", tmp_path / "live")
    assert cfg.model.student == {"type": "PrunedSegmentor", "checkpoint": "pruned.pth"}
    assert cfg.model.teacher == base.model and cfg.model.teacher_checkpoint == "b.pth"
    assert (cfg.model.temperature, cfg.model.alpha) == (3.0, 0.5)
    assert [(s.type, s.begin, s.end) for s in cfg.param_scheduler] == [("LinearLR", 0, 11),
                                                                        ("CosineAnnealingLR", 10, 400)]
    assert cfg.default_hooks.checkpoint.interval == 400


def test_later_stages_never_load_pretrained_backbone_weights(tmp_path: Path) -> None:
    cfg = baseline_config(TrainParams(config=DEIT), "data/ade", tmp_path, tmp_path)
    assert cfg.model.pretrained  # the baseline trains from the ImageNet weights, as in mmseg
    assert model_only(cfg).model.pretrained is None and cfg.model.pretrained


def test_the_trained_config_round_trips_through_a_file(tmp_path: Path) -> None:
    cfg = model_only(baseline_config(TrainParams(config=EMBEDDED), "d", tmp_path / "w", tmp_path / "l"))
    assert "work_dir" not in cfg and "load_from" not in cfg
    again = Config.fromfile(str(dump_config(cfg, tmp_path / "config.py")))
    assert again.model == cfg.model and again.train_dataloader == cfg.train_dataloader


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"cpd_stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("change, message", [
    ({"config": "configs/nope.py"}, "train.config='configs/nope.py': config 'configs/nope.py' is neither a file"),
    ({"checkpoint": "nowhere.pth"}, "train.checkpoint='nowhere.pth': no such file"),
    ({"max_iters": 0}, "train.max_iters=0: must be an integer >= 1"),
])
def test_train_stage_refuses_bad_params_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture, change: dict,
                                                        message: str) -> None:
    params = {"train": {**TrainParams(config=EMBEDDED).to_dict(), **change}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    code = _stage("train").main(["no-data", "out", "metrics.json"])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "metrics.json").exists()
