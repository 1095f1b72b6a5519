"""benchmarks/scaling.py's scaled folders: each crop is a distinct image that ingestion keeps,
and near-duplicate grouping only ever joins a photo with its own crops."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.scaling import CROP_AREA, scaled_tree, source_photo
from ingestion.convert import convert_image_tree
from tests.conftest import MINI

pytestmark = pytest.mark.slow  # a Beam conversion (about 10 s)

SCALE = 3


def test_crops_are_distinct_images_ingestion_keeps(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for folder in ("train", "validation"):
        for cls in ("cats", "dogs"):
            (photos / folder / cls).mkdir(parents=True)
            for photo in sorted((MINI / folder / cls).glob("*.jpg"))[:2]:
                shutil.copy(photo, photos / folder / cls / photo.name)

    tree = scaled_tree(photos, tmp_path / "work", SCALE, seed=0, jobs=1)
    files = sorted(tree.rglob("*"))
    files = [p for p in files if not p.is_dir()]
    assert len(files) == 8 * SCALE
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in files}) == len(files)
    for crop in (p for p in files if ".crop" in p.name):
        with Image.open(crop) as c, Image.open(f"{source_photo(str(crop))}.jpg") as o:
            assert c.format == "JPEG"
            area = c.size[0] * c.size[1] / (o.size[0] * o.size[1])
            assert CROP_AREA[0] - 0.02 <= area <= CROP_AREA[1] + 0.02, (crop, area)
    # A complete folder is reused as it is; another seed makes other crops.
    before = {p: p.stat().st_mtime_ns for p in files}
    assert scaled_tree(photos, tmp_path / "work", SCALE, seed=0, jobs=1) == tree
    assert {p: p.stat().st_mtime_ns for p in files} == before
    other = scaled_tree(photos, tmp_path / "other", SCALE, seed=1, jobs=1)
    crop = next(p for p in files if ".crop" in p.name)
    assert (other / crop.relative_to(tree)).read_bytes() != crop.read_bytes()

    report = convert_image_tree(str(tree), str(tmp_path / "tfrecords")).report
    assert (report["written"], report["skipped"]) == (len(files), 0)
    for group in report["near_duplicates"]["list"]:
        assert len({source_photo(m["path"]) for m in group["members"]}) == 1, group
