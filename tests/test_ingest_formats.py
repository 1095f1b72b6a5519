"""The image kinds a phone dump or a scraped set holds, generated from mini photos: the ones the
model decodes are written (as RGB, with their decoded size), the others skipped as not images,
and where a file sits (nested folders, uppercase extensions) does not matter."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from contract import features
from ingestion.convert import convert_image_tree
from tests.conftest import MINI

NOT_AN_IMAGE = "not an image (not JPEG, PNG, GIF or BMP)"


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    """root/cats and root/dogs: 3 photos each, then one file of each kind in cats."""
    root = tmp_path_factory.mktemp("formats") / "data"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for photo in sorted((MINI / "train" / cls).glob("*.jpg"))[:3]:
            shutil.copy(photo, root / cls / photo.name)
    source = sorted((MINI / "validation" / "cats").glob("*.jpg"))
    photos = [Image.open(p).convert("RGB").resize((96, 80)) for p in source[:12]]
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (64, 72, 3), dtype=np.uint8))
              for _ in range(3)]
    kinds: dict[str, bytes] = {
        "cmyk.jpg": encoded(photos[0].convert("CMYK"), "JPEG"),
        "gray.jpg": encoded(photos[1].convert("L"), "JPEG"),
        "sixteen_bit.png": encoded(Image.fromarray(
            np.asarray(photos[2].convert("L"), np.uint16) * 257), "PNG"),
        "palette.png": encoded(photos[3].convert("P"), "PNG"),
        "alpha.png": encoded(photos[4].convert("RGBA"), "PNG"),
        "animated.gif": encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "bitmap.bmp": encoded(photos[5], "BMP"),
        "UPPER.JPG": encoded(photos[6], "JPEG"),
        "nested/deeper/inside.jpg": encoded(photos[7], "JPEG"),
        "trailing_garbage.jpg": encoded(photos[8], "JPEG") + b"\0garbage" * 100,
        "one_pixel.png": encoded(Image.new("RGB", (1, 1)), "PNG"),
        "photo.webp": encoded(photos[9], "WEBP"),
        "photo.tiff": encoded(photos[10], "TIFF"),
        # An HEIC file starts with an ISO-BMFF 'ftyp' box (Pillow cannot write one).
        "photo.heic": b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(200),
        "zero_bytes.jpg": b"",
        "text.jpg": b"Lorem ipsum, not a JPEG\n",
    }
    for name, data in kinds.items():
        (root / "cats" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "cats" / name).write_bytes(data)
    result = convert_image_tree(str(root), str(tmp_path_factory.mktemp("out")))
    return result, kinds


def written_examples(out_dir: str) -> dict[str, tf.train.Example]:
    files = tf.io.gfile.glob(f"{out_dir}/*/*.tfrecord")
    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]
    return {e.features.feature[features.PATH_KEY].bytes_list.value[0].decode(): e
            for e in examples}


@pytest.mark.parametrize("name, fmt, size", [
    ("cmyk.jpg", "jpeg", (96, 80)), ("gray.jpg", "jpeg", (96, 80)),
    ("sixteen_bit.png", "png", (96, 80)), ("palette.png", "png", (96, 80)),
    ("alpha.png", "png", (96, 80)), ("animated.gif", "gif", (72, 64)),
    ("bitmap.bmp", "bmp", (96, 80)), ("UPPER.JPG", "jpeg", (96, 80)),
    ("nested/deeper/inside.jpg", "jpeg", (96, 80)), ("trailing_garbage.jpg", "jpeg", (96, 80)),
])
def test_decodable_kinds_are_written_with_their_decoded_size(converted, name, fmt, size):
    result, kinds = converted
    path = f"cats/{name}"
    outcome = {f["path"]: f for f in result.report["files"]}[path]
    assert outcome["status"] == "written" and outcome["label_name"] == "cats", outcome
    example = written_examples(result.output_dir)[path]

    def value(key: str):
        f = example.features.feature[key]
        return f.bytes_list.value[0] if f.HasField("bytes_list") else f.int64_list.value[0]

    assert value(features.FORMAT_KEY) == fmt.encode()
    assert (value(features.WIDTH_KEY), value(features.HEIGHT_KEY)) == size
    assert value(features.IMAGE_KEY) == kinds[name]  # the original bytes, as they were
    decoded = tf.io.decode_image(value(features.IMAGE_KEY), channels=3,
                                 expand_animations=False)
    assert decoded.shape == (size[1], size[0], 3)


@pytest.mark.parametrize("name, reason", [
    ("photo.webp", NOT_AN_IMAGE), ("photo.tiff", NOT_AN_IMAGE), ("photo.heic", NOT_AN_IMAGE),
    ("text.jpg", NOT_AN_IMAGE), ("zero_bytes.jpg", "empty file"),
    ("one_pixel.png", "too small (1x1 px, minimum side 32)"),
])
def test_other_kinds_are_skipped_with_a_reason(converted, name, reason):
    result, _ = converted
    assert {f["path"]: f for f in result.report["files"]}[f"cats/{name}"] == {
        "path": f"cats/{name}", "status": "skipped", "reason": reason, "label_name": "cats"}


def test_the_report_reconciles(converted):
    result, kinds = converted
    assert result.report["per_class"] == {
        "cats": {"inputs": 3 + len(kinds), "written": 3 + 10, "skipped": 6},
        "dogs": {"inputs": 3, "written": 3, "skipped": 0}}
    assert Path(result.output_dir, "labels.txt").read_text() == "cats\ndogs\n"


def test_the_generated_files_are_the_kinds_they_are_named_after(converted):
    _, kinds = converted
    png_depth_and_type = {n: (kinds[n][24], kinds[n][25]) for n in
                          ("sixteen_bit.png", "palette.png", "alpha.png")}
    assert png_depth_and_type == {"sixteen_bit.png": (16, 0), "palette.png": (8, 3),
                                  "alpha.png": (8, 6)}  # gray 16-bit, palette, RGBA
    for name, mode, frames in (("cmyk.jpg", "CMYK", 1), ("gray.jpg", "L", 1),
                               ("animated.gif", "P", 3), ("photo.webp", "RGB", 1),
                               ("photo.tiff", "RGB", 1)):
        with Image.open(io.BytesIO(kinds[name])) as im:
            assert (im.mode, getattr(im, "n_frames", 1)) == (mode, frames), name
