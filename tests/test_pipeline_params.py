"""params.yaml as data: every section validates, every bad value names its key, dvc.yaml lists exactly the keys."""
from __future__ import annotations

from pathlib import Path

import pytest

from cpd.pipeline.params import SECTIONS, DataParams, ParamsError, PruneParams, read_section, read_yaml

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILES = [ROOT / "params.yaml", *sorted((ROOT / "profiles").glob("*.yaml"))]


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_every_section_of_the_params_files_validates(path: Path) -> None:
    data = read_yaml(path)
    assert set(data) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        section = read_section(name, path)
        assert isinstance(section, cls)
        assert set(data[name]) == {key.split(".", 1)[1] for key in cls.keys()}, name


def test_the_defaults_are_the_params_file() -> None:
    for name, cls in SECTIONS.items():
        assert read_section(name, ROOT / "params.yaml") == cls(), name


def test_dvc_yaml_lists_exactly_the_keys_each_stage_reads() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cls = SECTIONS.get(name)
        expected = [*cls.keys(), *getattr(cls, "ALSO_READS", ())] if cls is not None else []
        assert stage.get("params", []) == expected, name
        assert f"stages/{name}.py" in stage["deps"] and stage["cmd"].startswith(f"python -m stages.{name} ")


def test_the_pruning_options_are_checked_by_the_core() -> None:
    """One validator: the prune section hands its pruning options to PruneConfig, which owns them."""
    from cpd.importance.registry import IMPORTANCES
    from cpd.prune import PruneConfig, register_importance

    p = PruneParams(thresholds=[0.2, 0.4], metric="flops")
    assert p.pruning == PruneConfig(thresholds=(0.2, 0.4), metric="flops", interval=20, step_fraction=0.05)
    assert p.pruning.max_iterations == p.pruning.interval * (8 + 2 + 1)
    name = "test_params_only_criterion"
    register_importance(name)(lambda ctx: None)
    try:
        assert PruneParams(criterion=name).criterion == name  # a criterion registered at run time is valid
    finally:
        IMPORTANCES.pop(name)


def test_yaml_1_2_floats_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("prune:\n  lr: 5e-4\n  thresholds: [0.3, .5]\n  interval: 20\n")
    p = read_section("prune", path)
    assert p.lr == 5e-4 and p.thresholds == (0.3, 0.5) and p.interval == 20 and p.target == 0.5


BAD = [
    ("prune", {"thresholds": [0.3, 1.5]}, "prune.thresholds=[0.3, 1.5]: 1.5 is not a sparsity in (0, 1)"),
    ("prune", {"thresholds": [0.5, 0.3]}, "prune.thresholds=[0.5, 0.3]: must be strictly ascending"),
    ("prune", {"thresholds": [0.3, 0.3]}, "must be strictly ascending"),
    ("prune", {"thresholds": []}, "prune.thresholds=[]: must be a non-empty list"),
    ("prune", {"thresholds": 1.5}, "1.5 is not a sparsity in (0, 1)"),
    ("prune", {"criterion": "l1"}, "prune.criterion='l1': not a registered importance; choose one of"),
    ("prune", {"interval": 0}, "prune.interval=0: must be an integer >= 1"),
    ("prune", {"interval": 2.5}, "prune.interval=2.5: must be an integer >= 1"),
    ("prune", {"step_fraction": 0.0}, "prune.step_fraction=0.0: must be in (0, 1]"),
    ("prune", {"min_keep": 1.0}, "prune.min_keep=1.0: must be in [0, 1)"),
    ("prune", {"kd": "yes"}, "prune.kd='yes': must be true or false"),
    ("prune", {"lr": -1.0}, "prune.lr=-1.0: must be a number in (0, inf)"),
    ("prune", {"lr": "fast"}, "prune.lr='fast'"),
    ("prune", {"sparsity": 0.5}, "prune: unknown key(s) ['sparsity']"),
    ("data", {"source": "web"}, "data.source='web': must be one of ['digit_mosaic', 'digit_pairs', 'folder']"),
    ("data", {"source": "folder", "root": None}, "data.root=None: source 'folder' needs"),
    ("data", {"n_train": 0}, "data.n_train=0: must be an integer >= 1"),
    ("data", {"seed": True}, "data.seed=True: must be an integer >= 0"),
    ("train", {"config": ""}, "train.config='': must be a non-empty string"),
    ("train", {"gpus": 0}, "train.gpus=0: must be an integer >= 1"),
    ("train", {"batch_size": 0}, "train.batch_size=0"),
    ("comb", {"size": [64]}, "comb.size=[64]: must be [H, W]"),
    ("comb", {"exclude": "head"}, "comb.exclude='head': must be a list"),
    ("distill", {"temperature": 0}, "distill.temperature=0: must be a number in (0, inf)"),
    ("distill", {"alpha": -0.5}, "distill.alpha=-0.5: must be a number in [0, inf)"),
    ("export", {"provider": "tpu"}, "export.provider='tpu': must be one of ['auto', 'cpu', 'cuda']"),
    ("export", {"runs": 0}, "export.runs=0: must be an integer >= 1"),
    ("export", {"curve": 1}, "export.curve=1: must be true or false"),
]


@pytest.mark.parametrize("section, change, message", BAD, ids=[f"{s}-{next(iter(c))}" for s, c, _ in BAD])
def test_a_bad_value_names_its_key(tmp_path: Path, section: str, change: dict, message: str) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[section].update(change)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError) as info:
        read_section(section, path)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_missing_section_is_named(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  seed: 1\n")
    with pytest.raises(ParamsError, match="has no 'prune' section"):
        read_section("prune", path)
    assert read_section("data", path) == DataParams(seed=1)


def test_sections_are_frozen_and_hold_tuples() -> None:
    p = PruneParams(thresholds=[0.2, 0.4])
    assert p.thresholds == (0.2, 0.4) and p.to_dict()["thresholds"] == [0.2, 0.4]
    with pytest.raises(AttributeError):
        p.interval = 5  # type: ignore[misc]
