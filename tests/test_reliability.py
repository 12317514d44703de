"""Every row of ``docs/reliability.md`` is a case here: a bad input, the reader a user reaches it through, and the
exact one-line answer (the table holds it, with the test's temporary folder written ``<tmp>``).

The cases call the readers directly (the first thing each stage does), not ``dvc``, to stay fast.
``python tests/test_reliability.py`` rewrites the table from the cases' current answers.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "reliability.md"
PARAMS = ROOT / "params.yaml"
INPUT = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class Case:
    """One row: ``run(tmp)`` builds the bad input under ``tmp`` and calls the reader, which must raise."""

    id: str
    input: str
    reader: str
    run: Callable[[Path], object]
    needs: str | None = None  # a package the reader needs (the case is skipped without it)
    pending: str | None = None  # why the answer is not there yet (the test is a strict xfail)
    expected: str | None = None  # the start of the answer to come, for a pending row


# --- small inputs --------------------------------------------------------------------------------------------

def tiny_cnn(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 4, 1))


def params_with(tmp: Path, old: str, new: str) -> Path:
    """The repository's params.yaml with ``old`` replaced by ``new`` (which must occur)."""
    text = PARAMS.read_text()
    assert old in text, old
    path = tmp / "params.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def read_params(tmp: Path, section: str, old: str, new: str):
    from cpd.pipeline.params import read_section

    return read_section(section, params_with(tmp, old, new))


def deps_file(tmp: Path) -> Path:
    from cpd import comb, save_deps

    path = tmp / "deps.json"
    save_deps(comb(tiny_cnn(), (INPUT,)), path)
    return path


def plan_files(tmp: Path) -> tuple[Path, Path]:
    """A plan removing two channels of the tiny CNN, and the pruned checkpoint."""
    from cpd import comb, save_pruned
    from cpd.prune import apply_plan_, make_plan, save_plan

    graph = comb(tiny_cnn(), (INPUT,))
    group = next(g for g in graph.groups if g.prunable)
    plan = make_plan(graph, {group.id: [0, 1]})
    save_plan(plan, tmp / "plan.json")
    save_pruned(apply_plan_(tiny_cnn(), plan), plan, tmp / "pruned.pth")
    return tmp / "plan.json", tmp / "pruned.pth"


def cut(path: Path, keep: float = 0.5) -> Path:
    """``path`` cut to a fraction of its bytes, as an interrupted copy leaves it."""
    out = path.with_name(f"cut_{path.name}")
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def load_deps_(path: Path, model: nn.Module | None = None):
    from cpd import load_deps

    return load_deps(path, model)


def read_checkpoint_(path: Path):
    from cpd.prune import read_checkpoint

    return read_checkpoint(path)


def read_plan_(path: Path):
    from cpd.prune import read_plan

    return read_plan(path)


def corrupt_deps(tmp: Path) -> Path:
    import json

    path = deps_file(tmp)
    data = json.loads(path.read_text())
    del data["groups"][0]["members"]
    path.write_text(json.dumps(data))
    return path


def wrong_weights(tmp: Path):
    from cpd import load_pruned

    plan, _ = plan_files(tmp)
    torch.save(tiny_cnn().state_dict(), tmp / "unpruned.pth")
    return load_pruned(tiny_cnn(), plan, tmp / "unpruned.pth")


def mm_cfg(**extra):
    from mm_tiny import PRUNE_CONFIG, SMALL_VIT

    from cpd.mm import load_config

    return load_config(PRUNE_CONFIG, {**SMALL_VIT, **extra})


def mm_checkpoint(tmp: Path, name: str = "iter_8.pth", **extra) -> Path:
    from cpd.mm import build_model

    path = tmp / name
    torch.save({"state_dict": build_model(mm_cfg(**extra)).state_dict(), "meta": {}}, path)
    return path


def save_baseline_(tmp: Path, checkpoint: Path):
    from cpd.mm.evaluation import save_baseline

    return save_baseline(mm_cfg(), checkpoint, tmp / "baseline.pth")


def runs_code(tmp: Path) -> Path:
    from test_safe_load import RunsCode

    path = tmp / "downloaded.pth"
    torch.save({"state_dict": {}, "meta": {"x": RunsCode(tmp / "MARKER")}}, path)
    return path


def distiller(teacher: Path):
    from cpd.mm.distiller import Distiller

    return Distiller(student=mm_cfg().model, teacher=None, teacher_checkpoint=str(teacher))


def run_checks(tmp: Path, **options):
    from mm_tiny import PRUNE_CONFIG, SMALL_VIT

    from cpd.mm.train import check_run_inputs, train_config

    return check_run_inputs(train_config(PRUNE_CONFIG, tmp / "work", {**SMALL_VIT, **options}))


def onnx_file(tmp: Path) -> Path:
    from cpd.export import export_onnx

    return export_onnx(tiny_cnn().eval(), INPUT, tmp / "model.onnx")


def open_session_(path: Path):
    from cpd.export.runtime import open_session

    return open_session(path)


def dataset_without_labels(tmp: Path):
    from cpd.pipeline.dataset import prepare_data
    from cpd.pipeline.params import DataParams

    root = tmp / "ade"
    for folder, names in (("img_dir/train", ["a.jpg", "b.jpg", "c.jpg"]), ("ann_dir/train", ["a.png"])):
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / name).write_bytes(b"")
    return prepare_data(DataParams(source="folder", root=str(root)), tmp / "out")


def dataset_folder_missing(tmp: Path):
    from cpd.pipeline.dataset import prepare_data
    from cpd.pipeline.params import DataParams

    return prepare_data(DataParams(source="folder", root=str(tmp / "no_such_folder")), tmp / "out")


def damaged_dataset_json(tmp: Path):
    from cpd.pipeline.dataset import read_dataset

    (tmp / "dataset.json").write_text('{"source": "digit_mosaic", "data_ro')
    return read_dataset(tmp)


def config_text(tmp: Path, text: str):
    from cpd.mm import load_config

    (tmp / "my_config.py").write_text(text)
    return load_config(tmp / "my_config.py")


def exclude_nothing(tmp: Path):
    from cpd import comb

    return comb(tiny_cnn(), (INPUT,), exclude=["no_such_module"])


# --- the rows ------------------------------------------------------------------------------------------------

CASES = [
    Case("params-misspelled-key", "`prune.treshold: 0.4` (misspelled `thresholds`)", "`read_section('prune')`",
         lambda t: read_params(t, "prune", "  criterion: obd", "  treshold: 0.4\n  criterion: obd")),
    Case("params-misspelled-other-section", "`distill.max_iter: 100`, read by the prune stage",
         "`read_section('prune')`",
         lambda t: read_params(t, "prune", "  max_iters: 500", "  max_iter: 100")),
    Case("params-unknown-section", "a top-level `pruning:` section", "`read_section('train')`",
         lambda t: read_params(t, "train", "\ndistill:", "\npruning:\n  thresholds: [0.5]\n\ndistill:")),
    Case("params-thresholds-descending", "`prune.thresholds: [0.5, 0.3]`", "`read_section('prune')`",
         lambda t: read_params(t, "prune", "thresholds: [0.3, 0.5]", "thresholds: [0.5, 0.3]")),
    Case("params-threshold-one", "`prune.thresholds: [0.3, 1.0]`", "`read_section('prune')`",
         lambda t: read_params(t, "prune", "thresholds: [0.3, 0.5]", "thresholds: [0.3, 1.0]")),
    Case("params-criterion-typo", "`prune.criterion: hesian`", "`read_section('prune')`",
         lambda t: read_params(t, "prune", "criterion: obd", "criterion: hesian")),
    Case("params-zero-iters", "`train.max_iters: 0`", "`read_section('train')`",
         lambda t: read_params(t, "train", "max_iters: 2000", "max_iters: 0")),
    Case("params-negative-lr", "`distill.lr: -0.001`", "`read_section('distill')`",
         lambda t: read_params(t, "distill", "lr: 8.0e-3             # peak", "lr: -0.001  # peak")),
    Case("params-folder-without-root", "`data.source: folder` with `root: null`", "`read_section('data')`",
         lambda t: read_params(t, "data", "source: digit_mosaic", "source: folder")),
    Case("params-size-one-number", "`comb.size: [64]`", "`read_section('comb')`",
         lambda t: read_params(t, "comb", "\n  size: null", "\n  size: [64]")),
    Case("params-provider", "`export.provider: tpu`", "`read_section('export')`",
         lambda t: read_params(t, "export", "provider: auto         # auto (CUDA when it works, else CPU)",
                               "provider: tpu  #")),
    Case("params-not-yaml", "params.yaml with an unclosed `[`", "`read_section('prune')`",
         lambda t: read_params(t, "prune", "thresholds: [0.3, 0.5]", "thresholds: [0.3, 0.5")),
    Case("params-missing-file", "no params.yaml", "`read_section('prune')`",
         lambda t: __import__("cpd.pipeline.params", fromlist=["x"]).read_section("prune", t / "params.yaml")),
    Case("comb-exclude-nothing", "`comb.exclude: [no_such_module]`", "`comb(model, inputs, exclude=...)`",
         exclude_nothing),
    Case("deps-missing", "no deps JSON", "`load_deps(path, model)` (the PruningHook)",
         lambda t: load_deps_(t / "deps.json")),
    Case("deps-truncated", "deps JSON cut in half", "`load_deps(path, model)`",
         lambda t: load_deps_(cut(deps_file(t)))),
    Case("deps-other-model", "deps JSON of a wider model", "`load_deps(path, model)`",
         lambda t: load_deps_(deps_file(t), tiny_cnn(width=16))),
    Case("deps-corrupted", "deps JSON whose first group lacks `members`", "`load_deps(path, model)`",
         lambda t: load_deps_(corrupt_deps(t))),
    Case("deps-is-a-plan", "a plan given as the deps JSON", "`load_deps(path, model)`",
         lambda t: load_deps_(plan_files(t)[0])),
    Case("plan-truncated", "plan JSON cut in half", "`read_plan(path)` / `apply_plan_`",
         lambda t: read_plan_(cut(plan_files(t)[0]))),
    Case("plan-is-deps", "a deps JSON given as the plan", "`read_plan(path)`",
         lambda t: read_plan_(deps_file(t))),
    Case("plan-other-model", "a plan of the 8-channel model applied to a 16-channel one", "`apply_plan_(model, path)`",
         lambda t: __import__("cpd.prune", fromlist=["x"]).apply_plan_(tiny_cnn(16), plan_files(t)[0])),
    Case("pruned-missing", "no `pruned.pth`", "`read_checkpoint(path)` (distill, evaluate, export)",
         lambda t: read_checkpoint_(t / "pruned.pth")),
    Case("pruned-truncated", "`pruned.pth` cut in half", "`read_checkpoint(path)`",
         lambda t: read_checkpoint_(cut(plan_files(t)[1]))),
    Case("pruned-is-mmengine", "an mmengine checkpoint given as a pruned file", "`read_checkpoint(path)`",
         lambda t: read_checkpoint_(mm_checkpoint(t)), needs="mmseg"),
    Case("pruned-weights-of-another-plan", "unpruned weights loaded with a plan", "`load_pruned(model, plan, path)`",
         wrong_weights),
    Case("baseline-truncated", "`train.checkpoint` cut in half", "`save_baseline` (train stage)",
         lambda t: save_baseline_(t, cut(mm_checkpoint(t))), needs="mmseg"),
    Case("baseline-other-config", "`train.checkpoint` of a 1-layer model for a 2-layer config", "`save_baseline`",
         lambda t: save_baseline_(t, mm_checkpoint(t, **{"model.backbone.num_layers": 1})), needs="mmseg"),
    Case("baseline-runs-code", "`train.checkpoint` whose unpickling runs `touch MARKER`", "`save_baseline`",
         lambda t: save_baseline_(t, runs_code(t)), needs="mmseg"),
    Case("baseline-not-torch", "`train.checkpoint` that is a text file", "`save_baseline`",
         lambda t: save_baseline_(t, (t / "notes.pth", (t / "notes.pth").write_text("weights"))[0]),
         needs="mmseg"),
    Case("baseline-file-missing", "no `baseline.pth`", "`load_baseline(cfg, path)` (evaluate)",
         lambda t: __import__("cpd.mm.evaluation", fromlist=["x"]).load_baseline(mm_cfg(), t / "baseline.pth"),
         needs="mmseg"),
    Case("teacher-missing", "`teacher_checkpoint` that does not exist", "`Distiller(...)` (prune with kd, distill)",
         lambda t: distiller(t / "teacher.pth"), needs="mmseg"),
    Case("teacher-other-model", "`teacher_checkpoint` of a 1-layer model", "`Distiller(...)`",
         lambda t: distiller(mm_checkpoint(t, **{"model.backbone.num_layers": 1})), needs="mmseg"),
    Case("load-from-truncated", "`load_from` cut in half", "`cpd.mm.train.train` (before the Runner)",
         lambda t: run_checks(t, load_from=str(cut(mm_checkpoint(t)))), needs="mmseg"),
    Case("prune-run-deps-truncated", "the PruningHook's deps JSON cut in half",
         "`cpd.mm.train.train` (before the Runner)",
         lambda t: run_checks(t, load_from=None,
                              custom_hooks=[dict(type="PruningHook", prune_cfg=str(cut(deps_file(t))))]),
         needs="mmseg"),
    Case("onnx-truncated", "an ONNX file cut in half", "`open_session` (export stage, `compare_onnx`, latency)",
         lambda t: open_session_(cut(onnx_file(t))), needs="onnxruntime"),
    Case("onnx-missing", "no ONNX file", "`open_session`", lambda t: open_session_(t / "model.onnx"),
         needs="onnxruntime"),
    Case("dataset-missing-labels", "`data.root` with 3 images and 1 label", "`prepare_data` (data stage)",
         dataset_without_labels),
    Case("dataset-root-missing", "`data.root` that does not exist", "`prepare_data`", dataset_folder_missing),
    Case("dataset-json-damaged", "`outputs/data/dataset.json` cut short", "`read_dataset` (every later stage)",
         damaged_dataset_json),
    Case("config-missing", "`train.config` that does not exist", "`load_config` / `resolve_config`",
         lambda t: __import__("cpd.mm", fromlist=["x"]).load_config(t / "none.py"), needs="mmseg"),
    Case("config-syntax", "`train.config` with an unclosed `(`", "`load_config`",
         lambda t: config_text(t, "model = dict(type='EncoderDecoder'\nx = 1\n"), needs="mmseg"),
    Case("config-bad-base", "`train.config` inheriting a missing `_base_`", "`load_config`",
         lambda t: config_text(t, "_base_ = ['./no_such_base.py']\n"), needs="mmseg"),
]


def answer(case: Case, tmp: Path) -> str:
    """The one line a case's reader answers, as ``Type: message`` with ``tmp`` written ``<tmp>``."""
    if case.needs:
        pytest.importorskip(case.needs)
    with pytest.raises(Exception) as info:  # noqa: PT011 - each row's exact answer is compared below
        case.run(tmp)
    text = f"{type(info.value).__name__}: {info.value}"
    if case.needs == "mmseg":  # where the libraries' own configs are installed differs between machines
        from cpd.mm.build import CONFIG_LIBRARIES, config_root

        for library in CONFIG_LIBRARIES:
            try:
                text = text.replace(str(config_root(library)), f"<{library} configs>")
            except ModuleNotFoundError:
                pass
    return text.replace(str(tmp.resolve()), "<tmp>").replace(str(tmp), "<tmp>")


def read_table() -> dict[str, str]:
    """``{row id: answer}`` of the table in docs/reliability.md."""
    rows = {}
    for line in TABLE.read_text().splitlines():
        if line.startswith("| `") and line.count("|") >= 5:
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0].strip("`")] = cells[3].removeprefix("``").removesuffix("``").strip()
    return rows


def test_the_table_lists_exactly_the_cases() -> None:
    assert list(read_table()) == [c.id for c in CASES]
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.pending)]
                                               if c.pending else []) for c in CASES])
def test_each_bad_input_gets_its_one_line(case: Case, tmp_path: Path) -> None:
    got = answer(case, tmp_path)
    assert "\n" not in got
    expected = read_table()[case.id]
    if expected.endswith("; ..."):  # the table gives the start of an answer still to come
        assert got.startswith(expected.removesuffix("..."))
    else:
        assert got == expected
    assert not (tmp_path / "MARKER").exists()


def write_table() -> None:
    """Rewrite the table of docs/reliability.md from the cases' answers (run from the repository root)."""
    import tempfile

    old = read_table() if TABLE.is_file() else {}
    lines = ["| row | bad input | reader | answer |", "|---|---|---|---|"]
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                got = case.expected if case.pending else answer(case, Path(tmp))
            except BaseException as e:  # noqa: BLE001 - a case without an answer yet keeps its old row
                got = old.get(case.id, f"(no error: {e!r})")
        lines.append(f"| `{case.id}` | {case.input} | {case.reader} | ``{got.replace('|', chr(92) + '|')}`` |")
    text = TABLE.read_text()
    start, end = text.index("<!-- table -->") + len("<!-- table -->"), text.index("<!-- /table -->")
    TABLE.write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    write_table()
