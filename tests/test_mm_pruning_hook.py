"""PruningHook on a tiny mmseg model: argument checks, both thresholds saved and loadable alone, the cut model
fine-tuned with a consistent optimizer, and a clean stop with continue_finetune=False."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmseg")
pytest.importorskip("sklearn")

from mm_tiny import HOOK, PRUNE_CONFIG, SMALL_VIT, ProbeHook, options, probe_batch, student_outputs  # noqa: E402

from cpd import comb, save_deps  # noqa: E402
from cpd.mm import build_model, load_config, seg_forward  # noqa: E402
from cpd.mm.pruned import load_pruned_segmentor  # noqa: E402
from cpd.mm.pruning_hook import PruningHook  # noqa: E402
from cpd.mm.train import train  # noqa: E402
from cpd.prune import read_checkpoint  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpd.data.digit_mosaic import write_mmseg_layout

    return write_mmseg_layout(tmp_path_factory.mktemp("digits") / "mosaic", n_train=16, n_val=8, seed=0)


def tiny_deps(path: Path, embed_dims: int = 32) -> Path:
    """The dependency JSON of the tiny model (what `cpd comb` writes), at another width if asked."""
    cfg = load_config(PRUNE_CONFIG, {**SMALL_VIT, "model.backbone.embed_dims": embed_dims,
                                     "model.decode_head.in_channels": embed_dims,
                                     "model.decode_head.channels": embed_dims})
    model = build_model(cfg).eval()
    save_deps(comb(model, (torch.randn(2, 3, 64, 64),), forward_fn=seg_forward), path)
    return path


@pytest.mark.parametrize("kwargs, match", [
    (dict(interval=0), "interval=0"),
    (dict(interval=2.5), "interval=2.5"),
    (dict(save_sparsity_thr=[0.5, 0.3]), "strictly ascending"),
    (dict(save_sparsity_thr=[0.3, 0.3]), "strictly ascending"),
    (dict(save_sparsity_thr=[0.3, 1.0]), r"1.0 is not a sparsity in \(0, 1\)"),
    (dict(save_sparsity_thr=[0.0]), r"0.0 is not a sparsity in \(0, 1\)"),
    (dict(save_sparsity_thr=[]), "non-empty"),
    (dict(continue_finetune="yes"), "continue_finetune"),
    (dict(criterion="nope"), "criterion='nope'"),
    (dict(metric="latency"), "metric='latency'"),
    (dict(round_to=0), "round_to=0"),
    (dict(rule="bigger"), "rule='bigger'"),
    (dict(exclude="backbone"), "exclude"),
])
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PruningHook(**kwargs)


def test_missing_prune_cfg_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cpd comb"):
        PruningHook(prune_cfg=str(tmp_path / "deps.json"))
    (tmp_path / "deps.json").write_text("{}")
    with pytest.raises(ValueError, match="exclude"):
        PruningHook(prune_cfg=str(tmp_path / "deps.json"), exclude=["decode_head"])


def test_prune_cfg_of_another_model_is_refused(data: Path, tmp_path: Path) -> None:
    deps = tiny_deps(tmp_path / "other.json", embed_dims=48)
    hook = {**HOOK, "prune_cfg": str(deps)}
    with pytest.raises(ValueError, match="another architecture"):
        train(PRUNE_CONFIG, tmp_path / "work", options(data, hooks=[hook]))


def test_two_thresholds_are_saved_and_load_alone(data: Path, tmp_path: Path) -> None:
    deps = tiny_deps(tmp_path / "deps.json")
    ProbeHook.records = {}
    hooks = [{**HOOK, "prune_cfg": str(deps)}, dict(type="ProbeHook")]
    runner = train(PRUNE_CONFIG, tmp_path / "work", options(data, max_iters=8, hooks=hooks))
    work = tmp_path / "work"
    hook = next(h for h in runner.hooks if isinstance(h, PruningHook))
    assert [e.iteration for e in hook.pruner.history] == [2, 4]
    assert hook.saved == [0.2, 0.4] and hook.materialized

    # each threshold file loads alone and computes what the training model computed when it was written
    assert sorted(ProbeHook.records) == ["thr_0.2.pth", "thr_0.4.pth"]
    sizes = []
    for name, expected in ProbeHook.records.items():
        plan, _ = read_checkpoint(work / name)
        assert plan["summary"]["sparsity"] >= float(name[4:-4])
        loaded = load_pruned_segmentor(work / name)
        sizes.append(sum(p.numel() for p in loaded.parameters()))
        for a, b in zip(student_outputs(loaded, probe_batch()), expected, strict=True):
            assert a.shape == b.shape
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (name, float((a - b).abs().max()))
    assert sizes[0] > sizes[1]

    # the model was cut and fine-tuned to the end; the optimizer holds exactly its parameters, state sliced
    model = runner.model
    assert runner.iter == 8 and sum(p.numel() for p in model.parameters()) == sizes[1]
    params = {id(p) for p in model.parameters()}
    optimizer = runner.optim_wrapper.optimizer
    held = [p for g in optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in held} == params
    for p in held:
        state = optimizer.state[p]
        assert state and state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
    # the best pruned model of the fine-tuning is kept, and loads alone too
    best = load_pruned_segmentor(work / "best_pruned.pth")
    assert sum(p.numel() for p in best.parameters()) == sizes[1]
    assert hook.best["metric"] == "mIoU" and hook.best["iter"] == 8


def test_continue_finetune_false_ends_training_cleanly(data: Path, tmp_path: Path) -> None:
    hook = {**HOOK, "continue_finetune": False}
    runner = train(PRUNE_CONFIG, tmp_path / "work", options(data, max_iters=20, hooks=[hook]))
    pruning = next(h for h in runner.hooks if isinstance(h, PruningHook))
    assert runner.iter == 4 and runner.train_loop.stop_training
    assert pruning.saved == [0.2, 0.4] and not pruning.materialized
    assert (tmp_path / "work" / "thr_0.4.pth").is_file()
    assert not (tmp_path / "work" / "best_pruned.pth").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(metric="params", latency=dict(file="lat.json")), "only it takes one"),
    (dict(metric="latency", latency="lat.json"), "must be a dict with 'file'"),
    (dict(metric="latency", latency=dict(file="lat.json", speed=2)), r"unknown key\(s\) \['speed'\]"),
    (dict(metric="latency", latency=dict(file="lat.json", runs=0)), "latency.runs=0"),
    (dict(metric="latency", latency=dict(file="lat.json", runs=2, rounds=3)), "at least latency.rounds=3"),
    (dict(metric="latency", latency=dict(file="lat.json", exporter="jit")), r"latency.exporter='jit'"),
])
def test_bad_latency_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PruningHook(**kwargs)


def test_missing_latency_file_names_the_stage(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="latency stage"):
        PruningHook(metric="latency", latency=dict(file=str(tmp_path / "latency.json")))


def test_latency_metric_re_measures_through_the_registered_meter(data: Path, tmp_path: Path) -> None:
    """The hook's pruner gets the latency model and a measure of the cut model's inference forward (here a
    deterministic meter of its MACs: nothing is timed), and each saved threshold records the measurements."""
    from cpd.flops import count_macs
    from cpd.mm.latency import METERS, register_meter
    from cpd.mm.tasks import task_of
    from cpd.prune.latency import profile_latency

    exporters = []

    def macs_meter(model, forward_fn, input_shape, runtime, threads, warmup, runs, rounds, baseline=None,
                   exporter="torchscript"):
        x = torch.randn(*input_shape)
        exporters.append(exporter)
        return lambda m: 1e-4 + 1e-9 * count_macs(m, (x,), forward_fn)

    deps = tiny_deps(tmp_path / "deps.json")
    cfg = load_config(PRUNE_CONFIG, SMALL_VIT)
    model = build_model(cfg).eval()
    graph = comb(model, (torch.randn(2, 3, 64, 64),), forward_fn=seg_forward)
    infer = task_of(cfg).infer_forward
    measure = macs_meter(model, infer, (1, 3, 64, 64), "fake", 1, 0, 1, 1)
    lm = profile_latency(model, graph, measure, "fake", (1, 3, 64, 64), round_to=4, align=False)
    lm.save(tmp_path / "latency.json")
    hook = {**HOOK, "prune_cfg": str(deps), "metric": "latency", "save_sparsity_thr": [0.1, 0.2],
            "latency": dict(file=str(tmp_path / "latency.json"))}
    saved = list(METERS)
    register_meter(macs_meter)
    try:
        runner = train(PRUNE_CONFIG, tmp_path / "work", options(data, max_iters=8, hooks=[hook]))
    finally:
        METERS[:] = saved
    pruning = next(h for h in runner.hooks if isinstance(h, PruningHook))
    assert pruning.saved == [0.1, 0.2]
    assert exporters[1:] and set(exporters[1:]) == {"dynamo"}  # it re-measures the graph the export stage ships
    for t in (0.1, 0.2):
        summary = read_checkpoint(tmp_path / "work" / f"thr_{t}.pth")[0]["summary"]
        checks = summary["latency"]["checks"]
        assert checks and checks[-1]["measured"] >= t - 5e-3 and summary["sparsity"] == checks[-1]["measured"]
        assert summary["latency"]["baseline_s"] == lm.baseline
