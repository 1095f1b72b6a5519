"""Kept files are read again to be written (their bytes are not held through the shuffles):
the written bytes are the decoded file's, and a file that changed or vanished in between is a
counted skip with its reason, not a wrong example."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import apache_beam as beam

from ingestion.scan import SourceFile
from ingestion.settings import SplitSettings
from ingestion.validate import ReadKept
from tests.conftest import MINI

PHOTO = sorted((MINI / "train" / "cats").glob("*.jpg"))[0]


def read_kept(root: Path, name: str, sha256: str) -> list:
    source = SourceFile(f"cats/{name}", 0, "all", f"cats/{name}".encode())
    record = {"source": source, "sha256": sha256, "label_name": "cats"}
    return list(ReadKept(str(root), ["cats", "dogs"], SplitSettings()).process(("eval", record)))


def test_kept_file_is_read_again_with_its_decoded_content(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    shutil.copy(PHOTO, tmp_path / "cats" / PHOTO.name)
    data = PHOTO.read_bytes()
    [(split, record)] = read_kept(tmp_path, PHOTO.name, hashlib.sha256(data).hexdigest())
    assert (split, record["data"], record["label_name"]) == ("eval", data, "cats")


def test_changed_or_vanished_file_is_a_skip(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    shutil.copy(PHOTO, tmp_path / "cats" / PHOTO.name)
    [changed] = read_kept(tmp_path, PHOTO.name, hashlib.sha256(b"before").hexdigest())
    assert isinstance(changed, beam.pvalue.TaggedOutput) and changed.tag == ReadKept.SKIPPED
    assert changed.value[0] == f"cats/{PHOTO.name}" and changed.value[2] == "cats"
    assert "changed while being converted" in changed.value[1]
    [vanished] = read_kept(tmp_path, "gone.jpg", hashlib.sha256(b"x").hexdigest())
    assert vanished.tag == ReadKept.SKIPPED and vanished.value[1]
