"""Torch files are read without running their code, and a bad file is one line naming it (``cpd.safe_load``)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from cpd.safe_load import BadFileError, RefusedGlobalError, check_torch, load_torch, read_document


class RunsCode:
    """Unpickling it runs a shell command that creates ``marker`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_file(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {"x": RunsCode(marker)}}, path)
    assert not marker.exists()
    return path, marker


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("reader", [load_torch, check_torch], ids=["load", "check"])
def test_code_in_a_file_is_refused_and_does_not_run(tmp_path: Path, reader) -> None:
    path, marker = evil_file(tmp_path)
    with pytest.raises(RefusedGlobalError) as info:
        reader(path, "teacher checkpoint")
    message = one_line(info.value)
    assert repr(str(path)) in message and "teacher checkpoint" in message
    assert "system" in message and "trusted=True" in message
    assert info.value.names and all("system" in n for n in info.value.names)
    assert not marker.exists()


def test_the_opt_in_reads_that_one_file_in_full(tmp_path: Path) -> None:
    path = tmp_path / "namespace.pth"
    torch.save({"args": argparse.Namespace(lr=0.1), "w": torch.zeros(1)}, path)
    with pytest.raises(RefusedGlobalError, match="argparse.Namespace"):
        load_torch(path)
    assert load_torch(path, trusted=True)["args"].lr == 0.1
    other = tmp_path / "other.pth"
    torch.save({"args": argparse.Namespace(lr=0.2)}, other)
    with pytest.raises(RefusedGlobalError):  # trusting one file trusts no other
        load_torch(other)


def test_an_allowlisted_global_loads(tmp_path: Path) -> None:
    path = tmp_path / "namespace.pth"
    torch.save({"args": argparse.Namespace(lr=0.1)}, path)
    check_torch(path, allow=[argparse.Namespace])
    assert load_torch(path, allow=[argparse.Namespace])["args"].lr == 0.1


def test_plain_files_load_as_saved(tmp_path: Path) -> None:
    path = tmp_path / "plain.pth"
    state = {"a": torch.arange(6.0).reshape(2, 3), "meta": {"n": 3, "names": ["x", "y"], "t": (1, 2.5)}}
    torch.save(state, path)
    check_torch(path)
    got = load_torch(path)
    assert torch.equal(got["a"], state["a"]) and got["meta"] == state["meta"]
    legacy = tmp_path / "legacy.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    check_torch(legacy)
    assert torch.equal(load_torch(legacy)["a"], state["a"])


@pytest.mark.parametrize("reader", [load_torch, check_torch], ids=["load", "check"])
@pytest.mark.parametrize("cut", [0, 10, 0.5, -1], ids=["empty", "header", "half", "last-byte"])
def test_a_truncated_file_is_one_line(tmp_path: Path, reader, cut: float) -> None:
    whole = tmp_path / "whole.pth"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, whole)
    data = whole.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:n])
    with pytest.raises(BadFileError) as info:
        reader(path, "pruned checkpoint")
    message = one_line(info.value)
    assert message.startswith(f"pruned checkpoint {str(path)!r} is truncated or not a torch file")
    assert "torch.save" in message


def test_missing_folder_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^baseline '.*nope.pth' does not exist$"):
        load_torch(tmp_path / "nope.pth", "baseline")
    with pytest.raises(BadFileError, match="is a folder"):
        load_torch(tmp_path, "baseline")
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(BadFileError, match=r"not a torch file \(starts with b'hell'\)"):
        check_torch(text, "baseline")


def test_read_document_names_the_file_and_what_is_valid(tmp_path: Path) -> None:
    def parse(data):
        if data.get("format") != "x":
            raise ValueError(f"format is {data.get('format')!r}, expected 'x'")
        return data["body"]

    path = tmp_path / "doc.json"
    path.write_text('{"format": "x", "body": [1, 2]}')
    assert read_document(path, "plan", parse, "an x file") == [1, 2]
    cases = {'{"format": "x", "bo': "not valid JSON", "": "is empty", '{"format": "y"}': "format is 'y'",
             '{"format": "x"}': "lacks the key 'body'"}
    for text, expected in cases.items():
        path.write_text(text)
        with pytest.raises(BadFileError) as info:
            read_document(path, "plan", parse, "an x file")
        message = one_line(info.value)
        assert message.startswith(f"plan {str(path)!r}") and expected in message and message.endswith("an x file")
