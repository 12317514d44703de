"""Write benchmark results: a JSON file under benchmarks/results/ and a marked section of docs/benchmarks.md."""
from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cpd.files import write_atomic, write_json_atomic  # noqa: E402
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEach section is written by the script it names; numbers are medians of repeated runs, " \
         "measured on the machine described in the section.\n"


def machine() -> str:
    """A one-line description of this machine."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads"


def write_results(name: str, data: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically."""
    return write_json_atomic(data, ROOT / "benchmarks" / "results" / f"{name}.json", indent=2)


def update_section(name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md, leaving the others as they are."""
    text = DOC.read_text() if DOC.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    write_atomic(DOC, lambda tmp: tmp.write_text(text))
