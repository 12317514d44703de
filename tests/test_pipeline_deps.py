"""Each stage of ``dvc.yaml`` depends on all the code it runs, derived from the code itself.

For each stage (``cmd: python -m stages.<name>``) the code it runs is the import closure of its script
over the repository: every ``import`` and ``from ... import`` anywhere in a module (lazy imports inside
functions too), every package ``__init__`` on the way, and every string naming a module of the
repository (mmengine's ``custom_imports`` that the recipes add, ``torchrun -m cpd.mm.launch``).  A stage
that reads mmengine configs also runs the modules named in ``custom_imports`` of the train config and
its ``_base_`` files.  Nothing here lists files: a module moved or added shows up by itself.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.\w+)+")


def module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package(path: Path, root: Path) -> str:
    """The package a module file belongs to (itself for an ``__init__.py``), for relative imports."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1])


def named_modules(path: Path, root: Path) -> set[str]:
    """Every module name ``path`` may import: import statements anywhere, and strings naming a module."""
    names: set[str] = set()
    package = _package(path, root)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # from pkg import submodule
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.fullmatch(node.value):
            names.add(node.value)  # custom_imports=[...], "-m", "cpd.mm.launch"
    return names


def closure(start: list[Path], root: Path) -> set[Path]:
    """The files of the repository that importing ``start`` can run (each parent package's ``__init__`` too)."""
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in named_modules(path, root):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]), root)
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def config_chain(path: Path) -> list[Path]:
    """A config file and the ``_base_`` files it inherits from that are files of the repository."""
    chain, todo = [], [path]
    while todo:
        config = todo.pop()
        if config in chain or not config.is_file():
            continue
        chain.append(config)
        for node in ast.walk(ast.parse(config.read_text(), filename=str(config))):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_base_" for t in node.targets):
                bases = ast.literal_eval(node.value)
                for base in [bases] if isinstance(bases, str) else bases:
                    if "::" not in base:  # mmseg::... is a shipped config, fixed by the installed version
                        todo.append((config.parent / base).resolve())
    return chain


def config_imports(configs: list[Path], root: Path) -> set[Path]:
    """The repository modules named by strings in the configs (their ``custom_imports``)."""
    names = set().union(*(named_modules(c, root) for c in configs)) if configs else set()
    return {f for f in (module_file(n, root) for n in names) if f is not None}


def reads_configs(files: set[Path]) -> bool:
    """Whether the code reads mmengine config files (``Config.fromfile``), whose custom_imports it then runs."""
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "fromfile":
                return True
    return False


def train_configs(root: Path, params: dict) -> list[Path]:
    """The train config of params.yaml and its ``_base_`` files (empty for a config shipped with mmseg)."""
    config = root / params["train"]["config"]
    return [c.resolve() for c in config_chain(config.resolve())] if config.is_file() else []


def stage_code(root: Path, stage: str, configs: list[Path]) -> set[Path]:
    """The repository files stage ``stage`` runs: its import closure, plus the modules its configs import."""
    start = [module_file("stages", root), module_file(f"stages.{stage}", root)]
    files = closure([p for p in start if p is not None], root)
    if reads_configs(files):
        files |= closure(sorted(config_imports(configs, root)), root)
    return files


def interpolate(dep: str, params: dict) -> str:
    """``${section.key}`` in a dvc.yaml dep, from params.yaml (as DVC does)."""
    def value(match: re.Match) -> str:
        node = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", value, dep)


def uncovered(files: set[Path], deps: list[str], root: Path) -> list[str]:
    """The files (relative to ``root``) that no dep covers (a dep covers itself and what is under it)."""
    dep_paths = [(root / d).resolve() for d in deps]
    return sorted(str(f.relative_to(root)) for f in files
                  if not any(f.resolve() == d or d in f.resolve().parents for d in dep_paths))


def pipeline(root: Path) -> tuple[dict, dict]:
    """The stages of ``root/dvc.yaml`` run by a stage script, and params.yaml."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    return {name: s for name, s in stages.items() if s["cmd"].startswith(f"python -m stages.{name} ")}, params


STAGES, PARAMS = pipeline(ROOT)


def test_every_stage_is_a_stage_script() -> None:
    assert sorted(STAGES) == sorted(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_deps_cover_the_code_the_stage_runs(stage: str) -> None:
    deps = [interpolate(d, PARAMS) for d in STAGES[stage]["deps"]]
    code = stage_code(ROOT, stage, train_configs(ROOT, PARAMS))
    assert module_file(f"stages.{stage}", ROOT) in code and len(code) > 2
    missing = uncovered(code, deps, ROOT)
    assert missing == [], f"dvc.yaml: stage {stage} runs these files but does not depend on them: {missing}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_code_dep_exists_and_holds_code_the_stage_runs(stage: str) -> None:
    """No stale path (DVC fails on a missing dep) and no package the stage never imports."""
    code = {f.resolve() for f in stage_code(ROOT, stage, train_configs(ROOT, PARAMS))}
    for dep in (interpolate(d, PARAMS) for d in STAGES[stage]["deps"]):
        path = (ROOT / dep).resolve()
        if dep.startswith(("outputs/", "metrics/")):
            continue  # another stage's outputs
        assert path.exists(), f"dvc.yaml: stage {stage} depends on {dep}, which does not exist"
        if path.suffix == ".py" or (path.is_dir() and any(path.rglob("*.py")) and path.name != "configs"):
            assert path in code or any(path in f.parents for f in code), \
                f"dvc.yaml: stage {stage} depends on {dep} but runs none of its code"


def test_the_train_stage_covers_the_config_and_its_bases() -> None:
    configs = train_configs(ROOT, PARAMS)
    assert configs, f"train.config={PARAMS['train']['config']!r} is not a file of the repository"
    deps = [interpolate(d, PARAMS) for d in STAGES["train"]["deps"]]
    assert uncovered(set(configs), deps, ROOT) == []


def test_the_closure_follows_lazy_relative_and_custom_imports(tmp_path: Path) -> None:
    """The derivation itself, on a package made for it: what each kind of import brings in."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "pkg/__init__.py": "",
        "pkg/main.py": "import os\n\ndef work():\n    from pkg.sub import lazy\n",
        "pkg/sub/__init__.py": "from . import rel\n",
        "pkg/sub/lazy.py": "CFG = dict(custom_imports=dict(imports=['pkg.hooked']))\n",
        "pkg/sub/rel.py": "from ..leaf import VALUE\n",
        "pkg/leaf.py": "VALUE = 1\n",
        "pkg/hooked.py": "",
        "pkg/unused.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    found = {str(p.relative_to(tmp_path)) for p in closure([pkg / "main.py"], tmp_path)}
    assert found == set(files) - {"pkg/unused.py"}
    assert uncovered({pkg / "unused.py", pkg / "leaf.py"}, ["pkg/leaf.py"], tmp_path) == ["pkg/unused.py"]
