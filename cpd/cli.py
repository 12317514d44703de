"""The ``cpd`` command: ``cpd comb`` and ``cpd check`` on mmseg, mmpretrain and mmdet configs.

The config's task (segmentation, classification, detection; see :mod:`cpd.mm.tasks`) is found
from the config itself: it says how to build the model and which forward to trace.

Each subcommand is one ``add_*_arguments`` function (its options) plus one
``run_*`` function (its work), so scripts such as ``tools/gen_prune_cfg.py``
reuse them. Heavy imports (torch models, mmseg, the core) happen inside the
``run_*`` functions: ``cpd --help`` stays fast and importing this module pulls
in neither mmengine nor mmseg.

A user mistake (a missing config, a bad size) is reported as one line on
stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the command line or its inputs; reported with exit code 2."""


def positive_int(text: str) -> int:
    """Parse a positive integer for argparse.

    Args:
        text: the command-line word.

    Returns:
        The integer.

    Raises:
        argparse.ArgumentTypeError: ``text`` is not an integer above zero.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def ratio(text: str) -> float:
    """Parse a pruning ratio in [0, 1) for argparse.

    Args:
        text: the command-line word.

    Returns:
        The ratio.

    Raises:
        argparse.ArgumentTypeError: ``text`` is not a number in [0, 1).
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that pick and size a model: ``CONFIG`` and ``--size H W``.

    Args:
        parser: the (sub)command parser to extend.
    """
    parser.add_argument(
        "config",
        metavar="CONFIG",
        help="config file, or a config name shipped with mmsegmentation, mmpretrain or mmdet "
        "(e.g. segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py, "
        "mmpretrain::resnet/resnet18_8xb32_in1k.py, mmdet::retinanet/retinanet_r18_fpn_1x_coco.py; "
        "a bare name tries each library)",
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="input height and width of the example batch (default: the config's crop size)",
    )


def add_comb_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``cpd comb``.

    Args:
        parser: the (sub)command parser to extend.
    """
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="dependency JSON to write")
    parser.add_argument(
        "--exclude",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help="module names whose channels must not be pruned (repeatable)",
    )
    parser.set_defaults(run=run_comb)


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``cpd check``.

    Args:
        parser: the (sub)command parser to extend.
    """
    add_model_arguments(parser)
    parser.add_argument(
        "--ratio", type=ratio, default=0.3, help="share of every group to prune (default 0.3)"
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false",
                        help="skip the ONNX export + onnxruntime comparison of the pruned model")
    parser.set_defaults(run=run_check)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``cpd`` parser with all its subcommands.

    Returns:
        The parser; ``args.run(args)`` runs the chosen subcommand.
    """
    parser = argparse.ArgumentParser(prog="cpd", description="Comb, Prune, Distill.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_comb_arguments(
        commands.add_parser("comb", help="trace a model and write its dependency JSON")
    )
    add_check_arguments(
        commands.add_parser("check", help="check that a model can be combed and pruned")
    )
    return parser


def load_model(config: str, size: Sequence[int] | None) -> tuple[Any, Any, Callable[..., Any]]:
    """Build the model of ``config`` and an example batch for it.

    Args:
        config: config path or shipped config name.
        size: ``(H, W)`` of the batch, or None for the task's default size.

    Returns:
        ``(model, inputs, forward_fn)``: ``forward_fn`` is the task's training forward
        (every head training uses); the model is in eval mode so that repeated
        forwards agree (no dropout).

    Raises:
        UsageError: the config cannot be found, its library is missing, no task owns
            it, or the model cannot run on a batch of that size.
    """
    try:
        from cpd import mm
        from cpd.mm.tasks import task_of
    except ModuleNotFoundError as error:
        raise UsageError(
            f"{error.name} is not installed; install the 'mm' extra: "
            "pip install -c requirements/constraints.txt -e '.[mm]'"
        ) from None
    try:
        cfg = mm.load_config(config)
        task = task_of(cfg)
        input_size = tuple(size) if size is not None else None
        model = task.build_model(cfg, input_size=input_size)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None
    except ModuleNotFoundError as error:
        raise UsageError(f"{config}: {error.name} is not installed; install the 'mm' extra") from None
    except ValueError as error:  # a config that does not parse or run, or that no task owns
        message = str(error)
        raise UsageError(message if config in message else f"{config}: {message}") from None
    model.eval()
    inputs = task.example_inputs(model, size=input_size)
    _try_forward(model, inputs, task.train_forward)
    return model, inputs, task.train_forward


def _try_forward(model: Any, inputs: Any, forward_fn: Callable[..., Any]) -> None:
    """Run one forward first, so that a size the model cannot take is a usage error."""
    import torch

    try:
        with torch.no_grad():
            forward_fn(model, inputs)
    except TypeError as error:  # the task cannot trace this model (e.g. a two-stage detector)
        raise UsageError(str(error)) from None
    except (RuntimeError, ValueError, AssertionError) as error:
        shape = "x".join(str(d) for d in inputs.shape)
        raise UsageError(
            f"the model does not run on a {shape} batch (try another --size): {error}"
        ) from None


def run_comb(args: argparse.Namespace) -> int:
    """Trace the model of ``args.config`` and save its dependency graph.

    Args:
        args: parsed ``cpd comb`` arguments.

    Returns:
        The exit code (0).

    Raises:
        UsageError: see :func:`load_model`.
    """
    model, inputs, forward_fn = load_model(args.config, args.size)
    from cpd import comb, save_deps

    graph = comb(model, (inputs,), forward_fn=forward_fn, exclude=tuple(args.exclude))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_deps(graph, args.out)
    prunable = sum(1 for group in graph.groups if group.prunable)
    print(f"{args.out}: {len(graph.groups)} groups, {prunable} prunable")
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    """Run the core's pruning checks on the model of ``args.config``.

    Args:
        args: parsed ``cpd check`` arguments.

    Returns:
        0 when every check passed, 1 otherwise.

    Raises:
        UsageError: see :func:`load_model`.
    """
    model, inputs, forward_fn = load_model(args.config, args.size)
    from cpd.check import check

    report = check(model, inputs, forward_fn=forward_fn, ratio=args.ratio, onnx=getattr(args, "onnx", True))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(summarize(report.to_dict()))
    return EXIT_OK if report.ok else EXIT_FAILED


def summarize(report: dict[str, Any]) -> str:
    """Render a check report for a person: verdict, sizes, invariants, and why groups are not prunable.

    Args:
        report: the report's ``to_dict()`` (see :class:`cpd.check.CheckReport`).

    Returns:
        The text; ``--json`` gives everything.
    """
    r = report
    lines = [
        f"{'PASS' if r['ok'] else 'FAIL'}: {r['prunable_groups']} of {r['groups']} groups prunable; "
        f"{r['removed_units']} units cut from {r['cut_groups']} groups",
        f"params {r['params_before'] / 1e6:.3f} M -> {r['params_after'] / 1e6:.3f} M; "
        f"MACs {r['macs_before'] / 1e9:.3f} G -> {r['macs_after'] / 1e9:.3f} G (the checked training forward: "
        "every head training uses)",
        f"pruned vs masked reference: max abs err {r['max_abs_err']:.2e} (relative {r['rel_err']:.2e})",
    ]
    onnx = r.get("onnx")
    if onnx:
        dyn = "dynamic batch ok" if onnx.get("dynamic_batch") else f"batch fixed ({onnx.get('dynamic_error')})"
        lines.append(f"onnx: {'ok' if onnx.get('ok') else 'FAILED'}, max abs diff {onnx.get('max_abs_diff'):.2e}, "
                     f"{dyn}")
    for reason, count in sorted(r.get("not_prunable", {}).items()):
        lines.append(f"not prunable ({count}): {reason}")
    for failure in r.get("failures", []):
        lines.append(f"failure: {failure}")
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"{r['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cpd`` command.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit code: 0 success, 1 a check failed, 2 a usage error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    return run(parser, args)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the subcommand chosen in ``args``, turning usage errors into exit code 2.

    Args:
        parser: the parser that produced ``args`` (names the program in errors).
        args: parsed arguments with a ``run`` function.

    Returns:
        The subcommand's exit code, or 2 after a usage error.
    """
    try:
        return args.run(args)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
