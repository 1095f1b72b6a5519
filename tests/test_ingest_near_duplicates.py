"""Near-duplicates (one photo saved twice, e.g. PNG and JPEG q95) are kept in one split and
reported; a heavy class imbalance is warned about before anything is written."""

from __future__ import annotations

import io
import logging
import random
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from PIL import Image

from contract import features
from ingestion import cli
from ingestion.convert import REPORT_FILE, convert_image_tree
from ingestion.near_duplicates import hamming, near_duplicate_groups, perceptual_hash
from ingestion.report import summarize
from ingestion.scan import scan_image_tree
from ingestion.settings import IMBALANCE_WARNING_RATIO, NEAR_DUPLICATE_MAX_DISTANCE
from tests.conftest import MINI


def photos(split: str, cls: str) -> list[Path]:
    return sorted((MINI / split / cls).glob("*.jpg"))


def saved_as(photo: Path, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    with Image.open(photo) as im:
        im.convert("RGB").save(buf, format=fmt, **options)
    return buf.getvalue()


def decoded_hash(data: bytes) -> int:
    return perceptual_hash(tf.io.decode_image(data, channels=3, expand_animations=False))


def split_paths(out_dir: str) -> dict[str, set[str]]:
    found = {}
    for split in features.SPLITS:
        files = tf.io.gfile.glob(f"{out_dir}/{split}/*.tfrecord")
        found[split] = {tf.train.Example.FromString(r.numpy()).features.feature[
            features.PATH_KEY].bytes_list.value[0].decode() for r in tf.data.TFRecordDataset(files)}
    return found


def test_the_hash_survives_re_encoding_and_tells_photos_apart():
    cats = photos("validation", "cats")[:6]
    for photo in cats:
        original = decoded_hash(photo.read_bytes())
        assert hamming(original, decoded_hash(saved_as(photo, "PNG"))) == 0  # lossless
        assert hamming(original, decoded_hash(saved_as(photo, "JPEG", quality=95))) <= 2
    hashes = [decoded_hash(p.read_bytes()) for p in cats]
    assert min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]) > (
        NEAR_DUPLICATE_MAX_DISTANCE)


def test_groups_are_transitive_exact_buckets_included_and_order_free():
    a = 0x0F0F_0F0F_0F0F_0F0F
    b = a ^ 0b1111  # 4 bits from a: near
    c = b ^ (0b1111 << 20)  # 4 from b, 8 from a: near b, so in a's group
    far = a ^ (0b11111 << 40)  # 5 bits from a: not near anything
    hashes = [far, a, c, b, a, 2**64 - 1, 2**64 - 1]
    assert near_duplicate_groups(hashes, 4) == [[1, 2, 3, 4], [5, 6]]
    shuffled = hashes[:]
    random.Random(0).shuffle(shuffled)
    groups = near_duplicate_groups(shuffled, 4)
    assert sorted(sorted(shuffled[i] for i in g) for g in groups) == sorted(
        [sorted([a, c, b, a]), [2**64 - 1] * 2])
    assert near_duplicate_groups(hashes, 0) == [[1, 4], [5, 6]]
    assert near_duplicate_groups([], 4) == []


def layout_with_a_photo_twice(root: Path, photo: Path) -> None:
    """train/ and validation/ with 3 distinct photos per class, plus `photo` as a PNG in
    train/cats and as a JPEG q95 in validation/cats."""
    for split in ("train", "validation"):
        for cls in ("cats", "dogs"):
            (root / split / cls).mkdir(parents=True)
            for p in photos(split, cls)[:3]:
                shutil.copy(p, root / split / cls / p.name)
    (root / "train" / "cats" / "twice.png").write_bytes(saved_as(photo, "PNG"))
    (root / "validation" / "cats" / "twice.jpg").write_bytes(
        saved_as(photo, "JPEG", quality=95))


def test_a_photo_in_train_and_validation_stays_in_train_and_is_reported(tmp_path):
    root = tmp_path / "data"
    layout_with_a_photo_twice(root, photos("validation", "cats")[10])
    # Whichever split the validation copy would get, it lands where the train copy is.
    result = convert_image_tree(str(root), str(tmp_path / "out"))
    report = result.report
    assert report["near_duplicates"]["groups"] == 1
    group = report["near_duplicates"]["list"][0]
    assert group["split"] == "train"
    assert [m["path"] for m in group["members"]] == ["train/cats/twice.png",
                                                     "validation/cats/twice.jpg"]
    moved_from = group["members"][1]["moved_from"]
    assert moved_from in ("eval", "test")
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path["validation/cats/twice.jpg"] == {
        "path": "validation/cats/twice.jpg", "status": "written", "split": "train",
        "label_name": "cats", "sha256": by_path["validation/cats/twice.jpg"]["sha256"],
        "near_duplicate_of": "train/cats/twice.png", "moved_from": moved_from}
    in_splits = split_paths(result.output_dir)
    assert {"train/cats/twice.png", "validation/cats/twice.jpg"} <= in_splits["train"]
    assert report["per_split"]["train"] == {"cats": 5, "dogs": 3}  # 4 + the moved copy
    assert report["near_duplicates"]["moved"] == 1
    assert "1 near-duplicate groups (2 images, 1 moved to their group's split)" in (
        summarize(report))
    assert cli.notes(report) == [
        "near-duplicates, all in train: train/cats/twice.png, validation/cats/twice.jpg "
        f"(moved from {moved_from})"]


def test_near_duplicates_within_validation_share_a_split(tmp_path):
    root = tmp_path / "data"
    layout_with_a_photo_twice(root, photos("validation", "cats")[10])
    (root / "train" / "cats" / "twice.png").unlink()
    photo = photos("validation", "dogs")[10]
    (root / "validation" / "dogs" / "a.png").write_bytes(saved_as(photo, "PNG"))
    (root / "validation" / "dogs" / "b.jpg").write_bytes(saved_as(photo, "JPEG", quality=95))
    (root / "validation" / "dogs" / "c.jpg").write_bytes(saved_as(photo, "JPEG", quality=90))
    report = convert_image_tree(str(root), str(tmp_path / "out")).report
    groups = report["near_duplicates"]["list"]
    assert [[m["path"] for m in g["members"]] for g in groups] == [
        ["validation/dogs/a.png", "validation/dogs/b.jpg", "validation/dogs/c.jpg"]]
    by_path = {f["path"]: f for f in report["files"]}
    assert {by_path[m["path"]]["split"] for m in groups[0]["members"]} == {groups[0]["split"]}


def test_distinct_photos_are_not_grouped(mini_tfrecords):
    # The 120 mini photos are 120 different photos.
    assert mini_tfrecords.report["near_duplicates"] == {
        "max_distance": NEAR_DUPLICATE_MAX_DISTANCE, "groups": 0, "images": 0, "moved": 0,
        "list": []}


# ---------------------------------------------------------------------------------------------
# Class imbalance


def class_folders(root: Path, cats: int, dogs: int) -> Path:
    for cls, n in (("cats", cats), ("dogs", dogs)):
        (root / cls).mkdir(parents=True)
        for p in photos("train", cls)[:n]:
            shutil.copy(p, root / cls / p.name)
    return root


def test_imbalance_is_warned_about_at_the_scan_naming_the_counts(tmp_path, caplog):
    assert IMBALANCE_WARNING_RATIO == 10
    assert scan_image_tree(str(class_folders(tmp_path / "even", 10, 1))).warnings == []
    with caplog.at_level(logging.WARNING, logger="ingestion"):
        tree = scan_image_tree(str(class_folders(tmp_path / "skewed", 11, 1)))
    warning = "class imbalance in the class folders: cats 11, dogs 1 (11.0:1, above 10:1)"
    assert tree.warnings == [warning]
    assert warning in caplog.messages  # logged by the scan, before anything is read or written

    root = tmp_path / "tv"
    for split, (cats, dogs) in (("train", (3, 31)), ("validation", (2, 2))):
        for cls, n in (("cats", cats), ("dogs", dogs)):
            (root / split / cls).mkdir(parents=True)
            for p in photos("train", cls)[:n]:
                shutil.copy(p, root / split / cls / p.name)
    assert scan_image_tree(str(root)).warnings == [
        "class imbalance in train/: cats 3, dogs 31 (10.3:1, above 10:1)"]


def test_the_cli_prints_warnings_and_the_report_keeps_them(tmp_path, capsys):
    root = class_folders(tmp_path / "data", 11, 1)
    out = tmp_path / "out"
    assert cli.main(["--data-dir", str(root), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    warning = "class imbalance in the class folders: cats 11, dogs 1 (11.0:1, above 10:1)"
    assert printed[1:] == [f"warning: {warning}"]
    [report_file] = out.glob(f"*/{REPORT_FILE}")
    assert f'"warnings": [\n  "{warning}"\n ]' in report_file.read_text()


@pytest.mark.parametrize("most", [0, 1])
def test_the_cli_lists_at_most_so_many_groups(most):
    report = {"near_duplicates": {"list": [
        {"split": "train", "members": [{"path": "a.png"}, {"path": "b.jpg"}]}] * 2}}
    lines = cli.notes(report, most=most)
    assert lines[-1] == f"... and {2 - most} more near-duplicate groups in {REPORT_FILE}"
    assert len(lines) == most + 1
