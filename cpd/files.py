"""cpd's own files: written atomically, and tagged with a format and a version that every reader checks.

Every document cpd writes (the dependency JSON, a plan, a pruned checkpoint, a pruner's or a hook's state)
starts with ``{"format": "cpd-...", "version": N}``; :class:`DocKind` names one such format once, writes its
header and checks it on the way back in.  :func:`write_atomic` is the one way a file reaches disk: through
a temporary file in the same folder and a rename, so a reader never sees half a file and a killed run
leaves either the old file or the new one.

Torch-free: the core and the edges both build on it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DocKind:
    """One versioned document format.

    Attributes:
        format: the ``format`` tag (``cpd-plan``, ...).
        version: the one version this code reads and writes.
        what: what to call it in messages (``plan``, ``dependency file``, ...).
    """

    format: str
    version: int
    what: str

    def header(self) -> dict[str, Any]:
        """``{"format": ..., "version": ...}``, the start of every document of this kind."""
        return {"format": self.format, "version": self.version}

    def check(self, doc: Any, where: str = "") -> Mapping[str, Any]:
        """Return ``doc`` if it is a mapping of this format and version.

        Args:
            doc: the loaded document.
            where: the file it came from, named at the start of the message (optional).

        Raises:
            ValueError: another format (or not a mapping), or another version.
        """
        prefix = f"{where}: " if where else ""
        if not isinstance(doc, Mapping) or doc.get("format") != self.format:
            found = doc.get("format") if isinstance(doc, Mapping) else type(doc).__name__
            raise ValueError(f"{prefix}not a cpd {self.what} (format is {found!r}, expected {self.format!r})")
        if doc.get("version") != self.version:
            raise ValueError(f"{prefix}{self.what} version {doc.get('version')!r} is not supported; this cpd "
                             f"reads version {self.version}")
        return doc


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write a file through ``write(temporary path)`` and a rename; the folder is created if needed.

    The temporary name is fixed (``.<stem>.partial<suffix>``, the suffix kept for writers that pick a format
    by it, such as matplotlib), so a file left by a killed run is overwritten and renamed away by the next
    one instead of piling up.

    Args:
        path: the file to (re)place.
        write: writes the whole content to the path it is given (it may also validate it: whatever it
            raises leaves ``path`` untouched and no temporary file behind).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(obj: Any, path: str | os.PathLike[str], indent: int | None = None) -> Path:
    """Write ``obj`` as JSON atomically (compact unless ``indent``; a trailing newline when indented)."""
    separators = None if indent is not None else (",", ":")
    text = json.dumps(obj, indent=indent, separators=separators) + ("\n" if indent is not None else "")
    return write_atomic(path, lambda tmp: tmp.write_text(text))
