"""The sections of ``params.yaml``: one frozen, validated dataclass per pipeline stage.

Each stage reads its own section only (``read_section("prune")``) and ``dvc.yaml`` lists exactly the
fields of that section as the stage's params, so DVC reruns a stage when, and only when, one of them
changes.  Every value is checked when the section is read, before the stage does any work: a bad one
raises :class:`ParamsError` naming the key, the value and what is allowed.

The pruning options of the ``prune`` section are checked by their owner, :class:`cpd.prune.PruneConfig`
(the same validator as the Python API's and the ``PruningHook``'s); everything else here.  Reading a
section needs PyYAML; the ``prune`` section also imports the core (torch).
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

PARAMS_FILE = "params.yaml"
DATA_SOURCES = ("digit_mosaic", "digit_pairs", "folder")
PROVIDERS = ("auto", "cpu", "cuda")
#: the latency model's runtime: onnxruntime (auto: CUDA when it runs, else the CPU), or torch eager.
LATENCY_PROVIDERS = (*PROVIDERS, "torch")


class ParamsError(ValueError):
    """A ``params.yaml`` value that a stage cannot use; the message names the key."""


Check = Callable[[str, Any], Any]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(low: int) -> Check:
    """A check for an integer ``>= low``."""
    def check(key: str, v: Any) -> int:
        if not _is_int(v) or v < low:
            raise ParamsError(f"{key}={v!r}: must be an integer >= {low}")
        return int(v)
    return check


def real(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> Check:
    """A check for a finite number in the interval from ``low`` to ``high``."""
    lb, hb = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"

    def check(key: str, v: Any) -> float:
        ok = _is_real(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            raise ParamsError(f"{key}={v!r}: must be a number in {lb}{low:g}, {high:g}{hb}")
        return float(v)
    return check


def choice(options: tuple[str, ...]) -> Check:
    """A check for one of ``options``."""
    def check(key: str, v: Any) -> str:
        if v not in options:
            raise ParamsError(f"{key}={v!r}: must be one of {list(options)}")
        return str(v)
    return check


def text(key: str, v: Any) -> str:
    """A non-empty string."""
    if not isinstance(v, str) or not v.strip():
        raise ParamsError(f"{key}={v!r}: must be a non-empty string")
    return v


def boolean(key: str, v: Any) -> bool:
    """``true`` or ``false``."""
    if not isinstance(v, bool):
        raise ParamsError(f"{key}={v!r}: must be true or false")
    return v


def optional(check: Check) -> Check:
    """``null`` or what ``check`` accepts."""
    def wrapped(key: str, v: Any) -> Any:
        return None if v is None else check(key, v)
    return wrapped


def names(key: str, v: Any) -> tuple[str, ...]:
    """A list of non-empty strings."""
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) and s for s in v):
        raise ParamsError(f"{key}={v!r}: must be a list of module or parameter names (may be empty)")
    return tuple(v)


def size(key: str, v: Any) -> tuple[int, int]:
    """``[H, W]``, two positive integers."""
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_int(d) and d > 0 for d in v):
        raise ParamsError(f"{key}={v!r}: must be [H, W], two positive integers, or null (the config's crop size)")
    return (int(v[0]), int(v[1]))


def pruning_option(key: str, v: Any) -> Any:
    """An option of :class:`cpd.prune.PruneConfig`: checked there, with the others (``PruneParams.validate``)."""
    return v


def spec(default: Any, check: Check) -> Any:
    """A dataclass field with its default and the check its value must pass."""
    return field(default=default, metadata={"check": check})


class Section:
    """Base of the section dataclasses: validation in ``__post_init__``, construction from a mapping."""

    NAME = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f"{self.NAME}.{f.name}", getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields (none by default)."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The keys of the section, as ``dvc.yaml`` lists them (``prune.thresholds``, ...)."""
        return tuple(f"{cls.NAME}.{f.name}" for f in fields(cls))

    @classmethod
    def from_dict(cls, data: Any) -> "Section":
        """Build and validate from a ``params.yaml`` section.

        Raises:
            ParamsError: the section is not a mapping, has an unknown key, or a bad value.
        """
        if not isinstance(data, Mapping):
            raise ParamsError(f"{cls.NAME}: the section must be a mapping of keys to values, got {data!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ParamsError(f"{cls.NAME}: unknown key(s) {unknown}; the section's keys are {known}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """The values as plain JSON-ready data."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


@dataclass(frozen=True)
class DataParams(Section):
    """``data``: the embedded digit mosaic scenes (segmentation), the digit pairs (classification), or an
    existing dataset folder (ADE20K...)."""

    NAME = "data"
    source: str = spec("digit_mosaic", choice(DATA_SOURCES))
    root: str | None = spec(None, optional(text))
    n_train: int = spec(12000, integer(1))
    n_val: int = spec(1000, integer(1))
    seed: int = spec(0, integer(0))

    def validate(self) -> None:
        if self.source == "folder" and self.root is None:
            raise ParamsError("data.root=None: source 'folder' needs the dataset's root folder")


@dataclass(frozen=True)
class TrainParams(Section):
    """``train``: the baseline (the teacher), trained from ``config`` or taken from ``checkpoint``."""

    NAME = "train"
    config: str = spec("configs/embedded/vit_digits.py", text)
    checkpoint: str | None = spec(None, optional(text))
    max_iters: int = spec(2000, integer(1))
    val_interval: int = spec(500, integer(1))
    batch_size: int | None = spec(None, optional(integer(1)))
    workers: int | None = spec(None, optional(integer(0)))
    seed: int = spec(0, integer(0))
    gpus: int = spec(1, integer(1))


@dataclass(frozen=True)
class CombParams(Section):
    """``comb``: the input size of the trace and the modules never pruned."""

    NAME = "comb"
    size: tuple[int, int] | None = spec(None, optional(size))
    exclude: tuple[str, ...] = spec((), names)


@dataclass(frozen=True)
class LatencyParams(Section):
    """``latency``: how the latency model is measured, when ``prune.metric`` is ``latency`` (else unused)."""

    NAME = "latency"
    #: keys of other sections the latency stage reads (whether to measure, and which widths the run reaches).
    ALSO_READS: ClassVar[tuple[str, ...]] = ("prune.metric", "prune.round_to", "prune.min_keep")
    provider: str = spec("auto", choice(LATENCY_PROVIDERS))
    size: tuple[int, int] | None = spec(None, optional(size))
    batch: int = spec(1, integer(1))
    threads: int = spec(1, integer(0))
    warmup: int = spec(5, integer(0))
    runs: int = spec(40, integer(1))
    rounds: int = spec(4, integer(1))
    align: bool = spec(True, boolean)

    def validate(self) -> None:
        """Each model of a measurement runs at least once per round."""
        if self.runs < self.rounds:
            raise ParamsError(f"latency.runs={self.runs}: must be at least latency.rounds={self.rounds}")


@dataclass(frozen=True)
class PruneParams(Section):
    """``prune``: hook-driven pruning of the baseline to the thresholds (the last is the target)."""

    NAME = "prune"
    thresholds: tuple[float, ...] = spec((0.3, 0.5), pruning_option)
    criterion: str = spec("obd", pruning_option)
    interval: int = spec(20, pruning_option)
    step_fraction: float | None = spec(0.05, pruning_option)
    metric: str = spec("params", pruning_option)
    round_to: int = spec(8, pruning_option)
    min_keep: float = spec(0.1, pruning_option)
    bn_batches: int = spec(20, integer(0))
    kd: bool = spec(True, boolean)
    temperature: float = spec(2.0, real(0.0, low_open=True))
    alpha: float = spec(1.0, real(0.0))
    lr: float = spec(5e-4, real(0.0, low_open=True))
    warmup_iters: int = spec(20, integer(0))
    batch_size: int | None = spec(None, optional(integer(1)))
    workers: int | None = spec(None, optional(integer(0)))
    seed: int = spec(0, integer(0))
    gpus: int = spec(1, integer(1))

    #: the keys that are :class:`cpd.prune.PruneConfig` options (``seed`` also seeds the training run).
    PRUNING = ("thresholds", "criterion", "interval", "step_fraction", "metric", "round_to", "min_keep", "seed")

    def validate(self) -> None:
        """Check the pruning options with :class:`cpd.prune.PruneConfig` and keep its normalised values."""
        config = self.pruning
        for key in self.PRUNING:
            object.__setattr__(self, key, getattr(config, key))

    @property
    def pruning(self) -> Any:
        """The pruning options as a :class:`cpd.prune.PruneConfig`.

        Raises:
            ParamsError: a bad option (named ``prune.<key>``).
        """
        from cpd.prune import PruneConfig

        try:
            return PruneConfig.from_dict({key: getattr(self, key) for key in self.PRUNING})
        except ValueError as e:
            raise ParamsError(f"{self.NAME}.{e}") from None

    @property
    def target(self) -> float:
        """The final sparsity (the last threshold)."""
        return self.thresholds[-1]


@dataclass(frozen=True)
class DistillParams(Section):
    """``distill``: KD fine-tuning of the pruned student from the baseline teacher."""

    NAME = "distill"
    max_iters: int = spec(500, integer(1))
    val_interval: int = spec(250, integer(1))
    lr: float = spec(8e-3, real(0.0, low_open=True))
    warmup_iters: int = spec(20, integer(0))
    temperature: float = spec(2.0, real(0.0, low_open=True))
    alpha: float = spec(1.0, real(0.0))
    batch_size: int | None = spec(None, optional(integer(1)))
    workers: int | None = spec(None, optional(integer(0)))
    seed: int = spec(0, integer(0))
    gpus: int = spec(1, integer(1))


@dataclass(frozen=True)
class EvaluateParams(Section):
    """``evaluate``: the validation run of every model."""

    NAME = "evaluate"
    batch_size: int | None = spec(None, optional(integer(1)))
    workers: int | None = spec(None, optional(integer(0)))


@dataclass(frozen=True)
class ExportParams(Section):
    """``export``: ONNX files, their agreement with torch, and onnxruntime latency at batch 1."""

    NAME = "export"
    opset: int | None = spec(None, optional(integer(7)))
    atol: float = spec(1e-4, real(0.0))
    rtol: float = spec(1e-4, real(0.0))
    warmup: int = spec(20, integer(0))
    runs: int = spec(300, integer(1))
    rounds: int = spec(6, integer(1))
    threads: int = spec(1, integer(0))
    provider: str = spec("auto", choice(PROVIDERS))
    curve: bool = spec(True, boolean)


SECTIONS: dict[str, type[Section]] = {cls.NAME: cls for cls in (
    DataParams, TrainParams, CombParams, LatencyParams, PruneParams, DistillParams, EvaluateParams, ExportParams)}

# YAML 1.2 floats: PyYAML (YAML 1.1) reads ``5e-4`` as a string, DVC's ruamel.yaml as a number.
_FLOAT = re.compile(r"^[-+]?(?:(?:[0-9][0-9_]*)\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?$"
                    r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")


def _loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that also reads ``1e-4`` as a float, as YAML 1.2 (and DVC) do."""

    Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for first in "-+0123456789.":
        Loader.yaml_implicit_resolvers[first] = [
            (tag, rx) for tag, rx in Loader.yaml_implicit_resolvers.get(first, []) if tag != "tag:yaml.org,2002:float"]
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return Loader


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a params file; an empty file is an empty mapping.

    Raises:
        ParamsError: the file does not exist, does not parse, or is not a YAML mapping (one line).
    """
    import yaml

    if not Path(path).is_file():
        raise ParamsError(f"{os.fspath(path)}: no such params file (the pipeline reads {PARAMS_FILE} in the "
                          "repository root)")
    try:
        data = yaml.load(Path(path).read_text(), Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ParamsError(f"{os.fspath(path)}: not valid YAML ({problem}{where})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def check_structure(data: Mapping[str, Any]) -> None:
    """Refuse an unknown section, or an unknown key in any section, of a params file.

    DVC reruns a stage only when a key it lists changes, so a misspelled key (``prune.treshold``) is
    listed by no stage, reruns nothing and would be silently ignored; every stage therefore checks
    the names of the whole file, not only of its own section (the values stay each stage's own).

    Raises:
        ParamsError: naming the unknown section or key and the valid ones.
    """
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"unknown section(s) {unknown}; the sections are {list(SECTIONS)}")
    for name, section in data.items():
        cls = SECTIONS[name]
        if isinstance(section, Mapping):
            known = [f.name for f in fields(cls)]
            extra = sorted(set(section) - set(known))
            if extra:
                raise ParamsError(f"{name}: unknown key(s) {extra}; the section's keys are {known}")


def check_params_file(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Section]:
    """Validate every section of a params file (names and values), as a run of the whole pipeline would.

    Returns:
        The sections present, validated.

    Raises:
        ParamsError: the first problem, in one line naming the key.
    """
    data = read_yaml(path)
    check_structure(data)
    return {name: SECTIONS[name].from_dict(section) for name, section in data.items()}


def read_section(name: str, path: str | os.PathLike[str] = PARAMS_FILE) -> Section:
    """Read and validate one section of ``params.yaml``.

    Args:
        name: the section (a stage name, one of ``SECTIONS``).
        path: the params file.

    Returns:
        The section's dataclass.

    Raises:
        KeyError: ``name`` is not a known section.
        ParamsError: the file has an unknown section or key (:func:`check_structure`), or the section is
            missing or holds a bad value (the message names the key).
    """
    cls = SECTIONS[name]
    data = read_yaml(path)
    check_structure(data)
    if name not in data:
        raise ParamsError(f"{path} has no '{name}' section (keys: {list(cls.keys())})")
    return cls.from_dict(data[name])


def main(argv: list[str] | None = None) -> int:
    """``python -m cpd.pipeline.params [PARAMS_FILE]``: check the whole file; exit 2 with one line if bad.

    A pipeline stage that depends on ``params.yaml`` as a file (not on its keys) and runs this
    reruns on every edit of the file, so a misspelled key fails ``dvc repro`` / ``dvc exp run``.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else PARAMS_FILE
    try:
        sections = check_params_file(path)
    except ParamsError as e:
        print(f"error: bad value in {path}: {e}", file=sys.stderr)
        return 2
    print(f"{path}: {len(sections)} sections, every key known and every value valid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
