"""No load path of cpd runs code from a checkpoint; real mmengine checkpoints still load; one file can be trusted.

A crafted checkpoint (the weights of a real run plus an object whose unpickling runs ``touch MARKER``) is
refused on every path that reads a user's checkpoint, and the marker never appears. The checkpoints the
Runner writes (message hub included) load weights-only, and the allowlist is what they hold.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("mmseg")
pytest.importorskip("sklearn")

from mm_tiny import PRUNE_CONFIG, SMALL_VIT, options  # noqa: E402
from test_safe_load import RunsCode, one_line  # noqa: E402

from cpd.mm import load_config  # noqa: E402
from cpd.mm.checkpoints import ALLOWLIST, TRUST_KEY, load_checkpoint, safe_checkpoint_loading  # noqa: E402
from cpd.mm.train import evaluate, train, train_config  # noqa: E402
from cpd.safe_load import BadFileError, RefusedGlobalError  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "embedded" / "vit_digits.py"


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"cpd_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cpd.data.digit_mosaic import write_mmseg_layout

    return write_mmseg_layout(tmp_path_factory.mktemp("digits") / "mosaic", n_train=16, n_val=8, seed=0)


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real two-iteration mmengine run of the tiny model (its checkpoints hold the message hub)."""
    return train(CONFIG, tmp_path_factory.mktemp("run"), options(data, max_iters=2, hooks=[]))


@pytest.fixture(scope="module")
def real(run) -> Path:
    return Path(run.work_dir) / "iter_2.pth"


@pytest.fixture()
def evil(real: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The real checkpoint plus, in its meta, an object that runs ``touch MARKER`` when unpickled."""
    marker = tmp_path / "MARKER"
    ckpt = load_checkpoint(real)
    ckpt["meta"]["note"] = RunsCode(marker)
    path = tmp_path / "evil.pth"
    torch.save(ckpt, path)
    return path, marker


def allowlisted_names() -> set[str]:
    return {e[1] if isinstance(e, tuple) else f"{e.__module__}.{e.__qualname__}" for e in ALLOWLIST}


def test_the_allowlist_is_what_runner_checkpoints_hold(run, real: Path) -> None:
    held = set(torch.serialization.get_unsafe_globals_in_checkpoint(real))
    assert {"mmengine.logging.history_buffer.HistoryBuffer", "builtins.getattr"} <= held
    assert held <= allowlisted_names()
    ckpt = load_checkpoint(real)
    hub = ckpt["message_hub"]["log_scalars"]
    assert hub["train/loss"].mean() == pytest.approx(run.message_hub.get_scalar("train/loss").mean())
    assert hub["train/loss"].statistics("current") == pytest.approx(run.message_hub.get_scalar("train/loss").current())


class Gadget:
    """``getattr(HistoryBuffer, '__init__')``: the allowlisted class, but not one of its statistics."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer

        return (getattr, (HistoryBuffer, "__init__"))


def test_getattr_resolves_history_statistics_only(tmp_path: Path) -> None:
    path = tmp_path / "gadget.pth"
    torch.save({"meta": {"x": Gadget()}}, path)
    with pytest.raises(RefusedGlobalError, match=r"builtins\.getattr\(HistoryBuffer,'__init__'\)"):
        load_checkpoint(path)


def _distiller(teacher: Path, student: Path | None = None):
    from cpd.mm.distiller import Distiller

    model = Distiller(student=load_config(PRUNE_CONFIG, SMALL_VIT).model, teacher=None,
                      teacher_checkpoint=str(teacher), student_checkpoint=None if student is None else str(student))
    model.init_weights()
    return model


def _pruned_evil(tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "pruned_evil.pth"
    torch.save({"format": "cpd-pruned", "version": 1, "plan": "{}", "state_dict": {}, "x": RunsCode(marker)}, path)
    return path


LOAD_PATHS = {
    "train.checkpoint (save_baseline)": lambda ev, real, data, tmp: _save_baseline(ev, data, tmp),
    "checkpoint_weights": lambda ev, real, data, tmp: _evaluation().checkpoint_weights(ev),
    "teacher_checkpoint": lambda ev, real, data, tmp: _distiller(ev),
    "student_checkpoint": lambda ev, real, data, tmp: _distiller(real, ev),
    "load_from (train)": lambda ev, real, data, tmp: train(CONFIG, tmp / "w", options(data, max_iters=2, hooks=[],
                                                                                       load_from=str(ev))),
    "resume (train)": lambda ev, real, data, tmp: _resume(ev, data, tmp),
    "mmengine's own loader": lambda ev, real, data, tmp: _mmengine_load(ev),
    "evaluate": lambda ev, real, data, tmp: evaluate(CONFIG, ev, tmp / "w", options(data, hooks=[])),
    "test_model (evaluate stage)": lambda ev, real, data, tmp: _test_model(ev, data, tmp),
    "pruned file (read_checkpoint)": lambda ev, real, data, tmp: _read_pruned(tmp, ev),
    "pruned file (load_pruned_segmentor)": lambda ev, real, data, tmp: _load_pruned_segmentor(tmp, ev),
}


def _evaluation():
    import cpd.mm.evaluation as evaluation

    return evaluation


def _save_baseline(ev: Path, data: Path, tmp: Path):
    return _evaluation().save_baseline(train_config(CONFIG, tmp / "w", options(data)), ev, tmp / "baseline.pth")


def _test_model(ev: Path, data: Path, tmp: Path):
    base = train_config(CONFIG, tmp / "w", options(data, hooks=[]))
    return _evaluation().test_model(base, base.model, tmp / "w", load_from=ev)


def _resume(ev: Path, data: Path, tmp: Path):
    work = tmp / "w"
    work.mkdir()
    (work / "last_checkpoint").write_text(str(ev))
    return train(CONFIG, work, options(data, max_iters=3, hooks=[]), resume=True)


def _mmengine_load(ev: Path):
    """mmengine's checkpoint loader itself, past cpd's early check (as a Runner's load_from or resume calls it)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    with safe_checkpoint_loading():
        return CheckpointLoader.load_checkpoint(str(ev), map_location="cpu")


def _read_pruned(tmp: Path, ev: Path):
    from cpd.prune import read_checkpoint

    return read_checkpoint(_pruned_evil(tmp, ev.parent / "MARKER"))


def _load_pruned_segmentor(tmp: Path, ev: Path):
    from cpd.mm.pruned import load_pruned_segmentor

    return load_pruned_segmentor(_pruned_evil(tmp, ev.parent / "MARKER"))


@pytest.mark.parametrize("path_name", list(LOAD_PATHS))
def test_code_in_a_checkpoint_never_runs(path_name: str, evil: tuple[Path, Path], real: Path, data: Path,
                                         tmp_path: Path) -> None:
    ev, marker = evil
    with pytest.raises(RefusedGlobalError) as info:
        LOAD_PATHS[path_name](ev, real, data, tmp_path)
    message = one_line(info.value)
    assert "system" in message and "was refused" in message
    assert ("not written by cpd" if path_name.startswith("pruned") else TRUST_KEY) in message
    assert not marker.exists()


def test_tools_test_refuses_in_one_line_and_trusts_on_request(evil: tuple[Path, Path], data: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    ev, marker = evil
    argv = [str(CONFIG), str(ev), "--work-dir", str(tmp_path / "w"), "--cfg-options", f"data_root={data}",
            *[f"{k}={v}" for k, v in SMALL_VIT.items()]]
    assert _tool("test").main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(ev) in err and "refused" in err
    assert not marker.exists()
    assert _tool("test").main([*argv[:2], "--trust", *argv[2:]]) == 0  # the user vouches for this file
    assert marker.exists()


def test_a_trusted_file_named_in_the_config_loads(real: Path, data: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(real)
    ckpt["meta"]["args"] = argparse.Namespace(lr=0.1)  # as some older checkpoints hold
    path = tmp_path / "namespace.pth"
    torch.save(ckpt, path)
    with pytest.raises(RefusedGlobalError, match="argparse.Namespace"):
        _save_baseline(path, data, tmp_path)
    cfg = train_config(CONFIG, tmp_path / "w", options(data, **{TRUST_KEY: [str(path)]}))
    model = _evaluation().save_baseline(cfg, path, tmp_path / "baseline.pth")
    key = "decode_head.conv_seg.weight"
    assert torch.equal(model.state_dict()[key], ckpt["state_dict"][key])
    runner = train(CONFIG, tmp_path / "w2", options(data, max_iters=2, hooks=[], load_from=str(path),
                                                     **{TRUST_KEY: [str(path)]}))
    assert runner.iter == 2


def test_a_truncated_checkpoint_is_one_line_before_the_runner(real: Path, data: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real.read_bytes()[:1000])
    with pytest.raises(BadFileError, match=r"^load_from '.*cut.pth' is truncated or not a torch file"):
        train(CONFIG, tmp_path / "w", options(data, max_iters=2, hooks=[], load_from=str(cut)))
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").rglob("*.log"))


def test_baselines_of_the_same_weights_are_the_same_bytes_in_any_checkout(real: Path, data: Path,
                                                                          tmp_path: Path) -> None:
    from cpd.mm.evaluation import checkpoint_source, save_baseline

    cfg = train_config(CONFIG, tmp_path / "w", options(data))
    outs = []
    for checkout in ("first", "second/nested"):
        root = tmp_path / checkout
        (root / "outputs" / "train" / "work").mkdir(parents=True)
        source = root / "outputs" / "train" / "work" / "iter_2.pth"
        source.write_bytes(real.read_bytes())
        assert checkpoint_source(source, root) == "outputs/train/work/iter_2.pth"
        out = root / "outputs" / "train" / "baseline.pth"
        save_baseline(cfg, source, out, meta={"config": "configs/embedded/vit_digits.py",
                                              "from": checkpoint_source(source, root)})
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert str(tmp_path).encode() not in outs[0]
    # a file outside the checkout is named by its content, wherever it lies
    outside = checkpoint_source(real, tmp_path / "first")
    copy = tmp_path / "first" / "outputs" / "train" / "work" / "iter_2.pth"
    assert outside.startswith("sha256:") and outside == checkpoint_source(copy, tmp_path / "second")
