"""Reading user files without running their code, and answering a bad file in one line.

A ``.pth`` file is a pickle, and unpickling may call any function the file names (``os.system``
included). :func:`load_torch` therefore reads every torch file with ``torch.load(weights_only=True)``:
tensors, plain containers and numbers, plus an explicit allowlist of globals the caller names (see
:mod:`cpd.mm.checkpoints` for what mmengine checkpoints hold). A file that names anything else is
refused before any of its code runs, with the global it asked for and how to opt in.

The opt-in is per file, never global: ``trusted=True`` for the one call that reads a file the user
vouches for (mmengine runs take a list of such files, see :mod:`cpd.mm.checkpoints`). There is
deliberately no environment variable for it: one would open every load in the process.

Every error is one line that names the file, what is wrong with it and what would be valid:

- a missing file: :class:`FileNotFoundError`;
- a truncated file, or one that is not a torch file: :class:`BadFileError`;
- a file that asks for a global outside the allowlist: :class:`RefusedGlobalError`.

:func:`check_torch` gives the same answers without reading the tensors (it reads the zip directory
and scans the pickle), so a run can refuse a bad file before it builds anything. :func:`read_json`
does the same for the JSON documents (deps, plans).
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch

from cpd.files import write_atomic

#: How the refusal message tells a user to trust a file, unless the caller knows a better way.
DEFAULT_OPT_IN = "if you trust this file, pass trusted=True for this file alone"
#: The end of a refusal for the files cpd writes itself (pruned models, baselines): they never need more.
NOT_FROM_CPD = "cpd writes this kind of file with tensors and plain data only, so this one was not written by cpd"


class BadFileError(ValueError):
    """A user file that cannot be used: truncated, corrupted, of another kind or made for another model."""


class RefusedGlobalError(BadFileError):
    """A torch file whose unpickling would call a function or build a class outside the allowlist."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


Allowed = Iterable[Any]
T = TypeVar("T")


def _fspath(path: str | os.PathLike[str]) -> str:
    return os.fspath(path)


def _require_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path; FileNotFoundError (one line) when it is not an existing file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {_fspath(path)!r} does not exist")
    if not p.is_file():
        raise BadFileError(f"{what} {_fspath(path)!r} is a folder, expected a file")
    return p


def _allowed_names(allow: Allowed) -> set[str]:
    """The ``module.name`` strings an allowlist admits (entries are objects or ``(object, name)`` pairs)."""
    names = set()
    for entry in allow:
        obj, name = entry if isinstance(entry, tuple) else (entry, None)
        names.add(name or f"{obj.__module__}.{obj.__qualname__}")
    return names


def _refused(path: str | os.PathLike[str], what: str, names: list[str], opt_in: str) -> RefusedGlobalError:
    listed = ", ".join(names)
    return RefusedGlobalError(
        f"{what} {_fspath(path)!r} was refused: loading it would call {listed}, which is not among the globals "
        f"a checkpoint may hold (tensors, plain data and a named allowlist); {opt_in}",
        names)


def _not_torch(path: str | os.PathLike[str], what: str, detail: str) -> BadFileError:
    return BadFileError(f"{what} {_fspath(path)!r} is truncated or not a torch file ({detail}); expected a "
                        "complete file written by torch.save")


_GLOBAL = re.compile(r"GLOBAL (\S+?)(?: whose module| was not an allowed global)|but got <class '([^']+)'>"
                     r"|Unsupported class (\S+)")


def _global_in(message: str) -> str | None:
    """The global a weights-only refusal message names, if it names one."""
    match = _GLOBAL.search(message)
    return next((g for g in match.groups() if g), None) if match else None


def _zip_or_legacy(p: Path, what: str) -> bool:
    """True for a zip torch file, False for a legacy (pickle) one; BadFileError for anything else."""
    with open(p, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(p):
        return True
    if head.startswith(b"PK"):
        raise _not_torch(p, what, "a zip archive whose directory is missing: the file was cut short")
    if head[:1] == b"\x80":
        return False
    raise _not_torch(p, what, "empty file" if not head else f"starts with {head!r}")


def check_torch(path: str | os.PathLike[str], what: str = "checkpoint", allow: Allowed = (),
                trusted: bool = False, opt_in: str = DEFAULT_OPT_IN) -> None:
    """Refuse a torch file that :func:`load_torch` would refuse, without reading its tensors.

    Reads the zip directory and scans the pickle for the globals it names (nothing is unpickled),
    so it is cheap enough to run before a long job starts. Legacy (non-zip) files are checked for
    their header only; :func:`load_torch` still refuses their globals when it reads them.

    Args:
        path: the file.
        what: what the file is to the user (``"train.checkpoint"``, ``"teacher checkpoint"``...).
        allow: globals allowed besides torch's own (objects or ``(object, "module.name")`` pairs).
        trusted: the user vouches for this file: only its existence and header are checked.
        opt_in: the end of the refusal: how the user trusts this file (or why no opt-in exists).

    Raises:
        FileNotFoundError: no such file.
        BadFileError: a folder, a truncated file, or not a torch file.
        RefusedGlobalError: the pickle names a global outside the allowlist.
    """
    p = _require_file(path, what)
    if not _zip_or_legacy(p, what) or trusted:
        return
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(p)
    except Exception as e:  # noqa: BLE001 - any failure to scan means a damaged archive
        raise _not_torch(path, what, " ".join(str(e).split())[:120]) from None
    refused = sorted(set(unsafe) - _allowed_names(allow))
    if refused:
        raise _refused(path, what, refused, opt_in)


def load_torch(path: str | os.PathLike[str], what: str = "checkpoint", allow: Allowed = (),
               trusted: bool = False, opt_in: str = DEFAULT_OPT_IN, map_location: Any = "cpu") -> Any:
    """Read a torch file without running code from it (``weights_only=True`` plus ``allow``).

    Args:
        path: the file.
        what: what the file is to the user, for the messages.
        allow: globals allowed besides torch's own: objects, or ``(object, "module.name")`` pairs
            that bind a name in the file to a (restricted) stand-in.
        trusted: the user vouches for this one file: it is unpickled in full (``weights_only=False``),
            which runs whatever code it names.
        opt_in: the end of the refusal: how the user trusts this file (or why no opt-in exists).
        map_location: as for :func:`torch.load`.

    Returns:
        What the file holds.

    Raises:
        FileNotFoundError: no such file.
        BadFileError: a folder, a truncated file, or not a torch file.
        RefusedGlobalError: the file names a global outside the allowlist (nothing of it ran).
    """
    p = _require_file(path, what)
    _zip_or_legacy(p, what)
    try:
        if trusted:
            return torch.load(p, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        name = _global_in(str(e))
        if name is None:
            raise _not_torch(path, what, _last_line(e)) from None
        raise _refused(path, what, [name], opt_in) from None
    except (RuntimeError, EOFError, OSError, KeyError, zipfile.BadZipFile) as e:
        raise _not_torch(path, what, _last_line(e) or type(e).__name__) from None


def save_torch(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` atomically, the same bytes for the same object wherever it is written.

    The object is serialised in memory first: ``torch.save`` names the zip's folder after the file it writes,
    so saving straight into a temporary file would put that file's random name into the bytes.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _last_line(e: BaseException) -> str:
    """The first meaningful sentence of a library error, on one line."""
    text = " ".join(str(e).split())
    return text.split(". ")[0][:160]


def read_json(path: str | os.PathLike[str], what: str, expected: str) -> Any:
    """Parse a JSON file; a missing, empty, truncated or non-JSON file is one line.

    Args:
        path: the file.
        what: what the file is to the user (``"deps JSON"``, ``"plan"``).
        expected: what a valid file is, for the message (``"a cpd-deps file written by cpd comb"``).

    Raises:
        FileNotFoundError: no such file.
        BadFileError: not valid JSON (names the line and column).
    """
    p = _require_file(path, what)
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        state = "empty" if not text.strip() else f"not valid JSON ({e.msg}: line {e.lineno} column {e.colno})"
        raise BadFileError(f"{what} {_fspath(path)!r} is {state}; expected {expected}") from None


def read_document(path: str | os.PathLike[str], what: str, parse: Callable[[Any], T], expected: str) -> T:
    """Parse a JSON file and then its content with ``parse``; every failure is one line naming the file.

    Args:
        path: the file.
        what: what the file is to the user (``"deps JSON"``, ``"plan"``).
        parse: builds the object from the JSON data; raises ValueError (or KeyError / TypeError /
            IndexError on a damaged structure) when the data is not what it reads.
        expected: what a valid file is (``"a cpd-deps file written by `cpd comb`"``).

    Raises:
        FileNotFoundError: no such file.
        BadFileError: not JSON, or ``parse`` refused it (its reason, then ``expected``).
    """
    data = read_json(path, what, expected)
    try:
        return parse(data)
    except BadFileError:
        raise
    except KeyError as e:
        reason = f"lacks the key {e.args[0]!r}"
    except (ValueError, TypeError, IndexError, AttributeError) as e:
        reason = " ".join(str(e).split())
    raise BadFileError(f"{what} {_fspath(path)!r}: {reason}; expected {expected}")
