"""Ingestion: layouts, splits, skips with reasons, dedupe, the report, and reuse."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from contract import features
from ingestion.convert import (
    COMPLETE_MARKER,
    REPORT_FILE,
    IngestError,
    SplitSettings,
    convert_image_tree,
)
from ingestion.scan import scan_image_tree
from tests.conftest import MINI


def read_split(out_dir: str, split: str) -> list[tf.train.Example]:
    files = sorted(tf.io.gfile.glob(f"{out_dir}/{split}/*"))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def feature(example: tf.train.Example, key: str):
    f = example.features.feature[key]
    return f.bytes_list.value[0] if f.HasField("bytes_list") else f.int64_list.value[0]


def png_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, len(mode)),
                                                       dtype=np.uint8).squeeze(), mode).save(
        buf, format="PNG")
    return buf.getvalue()


def test_train_validation_layout_splits_and_report(mini_tfrecords):
    report = mini_tfrecords.report
    assert report["layout"] == "train_validation"
    assert report["classes"] == ["cats", "dogs"]
    # train stays train; validation (20 per class) -> 80% eval, 20% test, per class.
    assert report["per_split"] == {"train": {"cats": 40, "dogs": 40},
                                   "eval": {"cats": 16, "dogs": 16},
                                   "test": {"cats": 4, "dogs": 4}}
    # Every file under the root exactly once, the checksum file as a counted skip.
    all_files = sorted(str(p.relative_to(MINI)) for p in MINI.rglob("*") if p.is_file())
    assert sorted(f["path"] for f in report["files"]) == all_files
    assert report["skipped_by_reason"] == {"not in a class folder": 1}
    assert report["total_files"] == report["written"] + report["skipped"] == 121

    for split, n in (("train", 80), ("eval", 32), ("test", 8)):
        examples = read_split(mini_tfrecords.output_dir, split)
        assert len(examples) == n
    example = read_split(mini_tfrecords.output_dir, "test")[0]
    path = feature(example, features.PATH_KEY).decode()
    data = (MINI / path).read_bytes()
    assert feature(example, features.IMAGE_KEY) == data  # original bytes, not re-encoded
    assert feature(example, features.SHA256_KEY).decode() == hashlib.sha256(data).hexdigest()
    assert feature(example, features.LABEL_NAME_KEY).decode() == Path(path).parent.name
    assert feature(example, features.LABEL_KEY) == ["cats", "dogs"].index(Path(path).parent.name)
    with Image.open(MINI / path) as im:
        size = (feature(example, features.WIDTH_KEY), feature(example, features.HEIGHT_KEY))
        assert size == im.size
    assert feature(example, features.FORMAT_KEY) == b"jpeg"


def test_unchanged_input_is_reused_and_split_is_deterministic(mini_copy, mini_tfrecords):
    again = convert_image_tree(str(mini_copy), str(Path(mini_tfrecords.output_dir).parent))
    assert again.reused and again.output_dir == mini_tfrecords.output_dir
    # A fresh conversion elsewhere assigns every file to the same split.
    fresh = convert_image_tree(str(mini_copy), str(Path(mini_copy).parent / "fresh"))
    assert not fresh.reused
    assert fresh.report["files"] == mini_tfrecords.report["files"]


def test_changed_input_is_converted_again(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(MINI / "train", root)
    first = convert_image_tree(str(root), str(tmp_path / "out"))
    (root / "cats" / "extra.png").write_bytes(png_bytes(64, 48))
    second = convert_image_tree(str(root), str(tmp_path / "out"))
    assert not second.reused and second.output_dir != first.output_dir
    assert second.report["written"] == first.report["written"] + 1


def test_class_folder_layout_hash_split(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(MINI / "train", root)  # root/<class>/: 40 cats, 40 dogs
    result = convert_image_tree(str(root), str(tmp_path / "out"))
    assert result.report["layout"] == "class_folders"
    assert result.report["per_split"] == {"train": {"cats": 32, "dogs": 32},
                                          "eval": {"cats": 4, "dogs": 4},
                                          "test": {"cats": 4, "dogs": 4}}
    custom = convert_image_tree(str(root), str(tmp_path / "out2"),
                                SplitSettings(eval_fraction=0.25, test_fraction=0.25))
    assert custom.report["per_split_total"] == {"train": 40, "eval": 20, "test": 20}


def test_bad_files_are_skipped_with_reasons_and_duplicates_kept_once(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "validation"):
        for cls in ("cats", "dogs"):
            shutil.copytree(MINI / split / cls, root / split / cls)
    cat = sorted((root / "train" / "cats").glob("*.jpg"))[0]
    (root / "train" / "cats" / "truncated.jpg").write_bytes(cat.read_bytes()[:300])
    (root / "train" / "dogs" / "notes.jpg").write_text("not an image at all")
    (root / "train" / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "train" / "dogs" / "tiny.png").write_bytes(png_bytes(10, 20))
    (root / "train" / "dogs" / "gray.png").write_bytes(png_bytes(64, 40, "L"))
    (root / "train" / "cats" / ".DS_Store").write_bytes(b"\0\0")
    (root / "README.txt").write_text("stray")
    # The same photo in train/cats and validation/dogs: kept once, in train.
    shutil.copy(cat, root / "validation" / "dogs" / "copy_of_cat.jpg")
    shutil.copy(cat, root / "train" / "cats" / "same_again.jpg")

    result = convert_image_tree(str(root), str(tmp_path / "out"))
    by_path = {f["path"]: f for f in result.report["files"]}
    reasons = {p: f.get("reason", "") for p, f in by_path.items()}
    assert reasons["train/cats/truncated.jpg"].startswith("undecodable jpeg")
    assert reasons["train/dogs/notes.jpg"].startswith("not an image")
    assert reasons["train/dogs/empty.jpg"] == "empty file"
    assert reasons["train/dogs/tiny.png"].startswith("too small (10x20 px")
    assert reasons["train/cats/.DS_Store"] == "hidden file"
    assert reasons["README.txt"] == "not in a class folder"
    cat_path = str(cat.relative_to(root))
    assert reasons["train/cats/same_again.jpg"] == f"duplicate of {cat_path}"
    assert reasons["validation/dogs/copy_of_cat.jpg"] == (
        f"duplicate of {cat_path} (which is labelled cats)")
    assert by_path[cat_path]["status"] == "written" and by_path[cat_path]["split"] == "train"
    assert by_path["train/dogs/gray.png"]["status"] == "written"  # grayscale becomes RGB

    # Accounting: every file once; counts agree with the TFRecords.
    assert len(by_path) == len(result.report["files"]) == result.report["total_files"]
    assert result.report["skipped"] == 8
    hashes = Counter()
    for split in features.SPLITS:
        examples = read_split(result.output_dir, split)
        assert len(examples) == result.report["per_split_total"][split]
        hashes.update(feature(e, features.SHA256_KEY) for e in examples)
    assert max(hashes.values()) == 1  # identical content never lands twice (or in two splits)

    on_disk = json.loads((Path(result.output_dir) / REPORT_FILE).read_text())
    assert on_disk == result.report
    assert (Path(result.output_dir) / COMPLETE_MARKER).exists()


@pytest.mark.parametrize("make_tree, message", [
    (lambda r: None, "does not exist"),
    (lambda r: (r / "only").mkdir(parents=True), "need at least 2"),
    (lambda r: (r / "train" / "cats").mkdir(parents=True), "no validation/ folder"),
    (lambda r: [(r / d).mkdir(parents=True) for d in ("a", "b")], "no files found"),
    (lambda r: [(r / s / c).mkdir(parents=True) for s, c in
                (("train", "a"), ("train", "b"), ("validation", "c"))], "classes that train/"),
])
def test_wrong_layout_is_a_clear_error(tmp_path, make_tree, message):
    root = tmp_path / "root"
    make_tree(root)
    with pytest.raises(IngestError, match=message):
        scan_image_tree(str(root))
