"""Ingestion on hostile folders: it never hangs or crashes on a file, and says why it skips one.

Every tree is built in tmp_path from a few mini photos; bombs are crafted headers, so the
tests stay light (the point is that ingestion refuses them before decoding).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from contract import features
from contract.image_header import image_size
from ingestion import reading
from ingestion.convert import REPORT_FILE, IngestError, SplitSettings, convert_image_tree
from ingestion.scan import scan_image_tree
from ingestion.validate import inspect_image
from ingestion.walk import DIRECTORY_SYMLINK, SYMLINK_LOOP
from tests.conftest import MINI, REPO

LIMIT = SplitSettings().max_image_pixels


def photos(cls: str) -> list[Path]:
    return sorted((MINI / "train" / cls).glob("*.jpg"))


def make_tree(root: Path, classes: tuple[str, ...] = ("cats", "dogs"), n: int = 3) -> Path:
    """root/<class>/ with n distinct mini photos each (cats and dogs photos, by class order)."""
    for i, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for photo in photos(("cats", "dogs")[i % 2])[(i // 2) * n:(i // 2 + 1) * n]:
            shutil.copy(photo, root / cls / photo.name)
    return root


def outcomes(result) -> dict[str, dict]:
    return {f["path"]: f for f in result.report["files"]}


def assert_reconciles(report: dict) -> None:
    for counts in report["per_class"].values():
        assert counts["inputs"] == counts["written"] + counts["skipped"]
    assert report["total_files"] == report["written"] + report["skipped"]
    assert report["total_files"] == (sum(c["inputs"] for c in report["per_class"].values())
                                     + report["outside_class_folders"])


def read_paths(out_dir: str) -> list[bytes]:
    files = tf.io.gfile.glob(f"{out_dir}/*/*.tfrecord")
    return [tf.train.Example.FromString(r.numpy()).features.feature[features.PATH_KEY]
            .bytes_list.value[0] for r in tf.data.TFRecordDataset(files)]


def png(width: int, height: int, rows: bytes = b"") -> bytes:
    """A 1-bit grayscale PNG of any size: header with a valid CRC, then the (zero) rows."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A valid side x side black PNG: ~1 KB per 1000 rows on disk, side^2 pixels decoded."""
    row = b"\0" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return png(side, side, data)


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF) declares another size."""
    at = 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]


def convert_with_timeout(root: Path, out: Path, fifos: list[Path], timeout: float = 120,
                         **kwargs):
    """convert_image_tree in a thread; if it blocks on a FIFO, a writer unblocks it, and fail."""
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = convert_image_tree(str(root), str(out), **kwargs)
        except BaseException as e:  # noqa: BLE001  (re-raised in the test's thread)
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        for fifo in fifos:  # a reader blocked in open() returns once a writer comes and goes
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"ingestion blocked on a FIFO for more than {timeout}s")
    if "error" in result:
        raise result["error"]
    return result["value"]


# ---------------------------------------------------------------------------------------------
# Files that are not regular files, or whose names are not UTF-8


def test_fifo_is_skipped_not_opened(tmp_path):
    root = make_tree(tmp_path / "data")
    fifos = [root / "cats" / "x.jpg", root / "stray.fifo"]
    for fifo in fifos:
        os.mkfifo(fifo)
    result = convert_with_timeout(root, tmp_path / "out", fifos)
    by_path = outcomes(result)
    assert by_path["cats/x.jpg"] == {"path": "cats/x.jpg", "status": "skipped",
                                     "reason": "not a regular file", "label_name": "cats"}
    assert by_path["stray.fifo"]["reason"] == "not a regular file"
    assert result.report["per_class"]["cats"] == {"inputs": 4, "written": 3, "skipped": 1}
    assert_reconciles(result.report)


def test_reading_never_opens_a_fifo_even_if_swapped_in(tmp_path):
    fifo = tmp_path / "late.jpg"
    os.mkfifo(fifo)  # e.g. a regular file replaced by a FIFO after the scan
    assert reading.read_source(str(fifo), 1000) == (None, "not a regular file")
    assert reading.read_source(os.fsencode(fifo), 1000) == (None, "not a regular file")


def test_file_name_not_utf8_is_ingested_with_an_escaped_path(tmp_path):
    root = make_tree(tmp_path / "data")
    name = os.fsencode(root / "cats") + b"/caf\xe9.jpg"
    with open(name, "wb") as f:
        f.write(photos("cats")[5].read_bytes())
    result = convert_image_tree(str(root), str(tmp_path / "out"))
    entry = outcomes(result)["cats/caf\\xe9.jpg"]
    assert entry["status"] == "written" and entry["label_name"] == "cats"
    raw = (Path(result.output_dir) / REPORT_FILE).read_bytes()
    assert json.loads(raw.decode("utf-8")) == result.report  # strict UTF-8, no surrogates
    assert b"cats/caf\\xe9.jpg" in read_paths(result.output_dir)
    assert_reconciles(result.report)


@pytest.mark.slow
def test_class_folder_name_not_utf8_is_a_one_line_error(tmp_path):
    root = make_tree(tmp_path / "data")
    os.rename(root / "dogs", os.fsencode(root) + b"/d\xf6gs")
    with pytest.raises(IngestError, match=r"d\\xf6gs' has a name that is not printable UTF-8"):
        scan_image_tree(str(root))
    # The command: exit status 2, one line naming the folder (escaped), no traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "ingestion", "--data-dir", os.fsencode(root),
         "--output-dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, timeout=300, check=False)
    stderr = proc.stderr.decode("utf-8")
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: class folder '{root}/d\\xf6gs' has a name that is not printable "
                      "UTF-8 (class names become the model's labels); rename it"]
    assert not (tmp_path / "out").exists()


def test_broken_symlinks_are_skipped(tmp_path):
    root = make_tree(tmp_path / "data")
    (root / "cats" / "gone.jpg").symlink_to(root / "cats" / "nowhere.jpg")
    (root / "dogs" / "self.jpg").symlink_to("self.jpg")  # a symlink to itself
    (root / "dogs" / "link.jpg").symlink_to(photos("dogs")[5])  # a file symlink is followed
    result = convert_image_tree(str(root), str(tmp_path / "out"))
    by_path = outcomes(result)
    assert by_path["cats/gone.jpg"]["reason"] == "broken symlink"
    assert by_path["dogs/self.jpg"]["reason"] == "broken symlink (it loops)"
    assert by_path["dogs/link.jpg"]["status"] == "written"
    assert result.report["skipped_by_reason"] == {"broken symlink": 2}
    assert_reconciles(result.report)


def test_directory_symlinks_are_not_followed_and_loops_are_named(tmp_path):
    root = make_tree(tmp_path / "data")
    (root / "cats" / "loop").symlink_to("..")
    (root / "cats" / "self").symlink_to(".")
    (root / "dogs" / "more").symlink_to(MINI / "train" / "dogs")
    (root / "dogs" / "sub").mkdir()  # real subfolders are walked
    shutil.copy(photos("dogs")[6], root / "dogs" / "sub" / "deep.jpg")
    result = convert_image_tree(str(root), str(tmp_path / "out"))
    by_path = outcomes(result)
    assert by_path["cats/loop"]["reason"] == SYMLINK_LOOP
    assert by_path["cats/self"]["reason"] == SYMLINK_LOOP
    assert by_path["dogs/more"]["reason"] == DIRECTORY_SYMLINK
    assert by_path["dogs/sub/deep.jpg"]["status"] == "written"
    assert len(by_path) == 10
    assert_reconciles(result.report)


def test_class_folder_symlink_is_followed_but_not_to_an_enclosing_folder(tmp_path):
    root = make_tree(tmp_path / "data")
    shutil.move(root / "dogs", tmp_path / "elsewhere")
    (root / "dogs").symlink_to(tmp_path / "elsewhere")
    result = convert_image_tree(str(root), str(tmp_path / "out"))
    assert result.report["per_class"]["dogs"] == {"inputs": 3, "written": 3, "skipped": 0}
    (root / "birds").symlink_to("..")
    with pytest.raises(IngestError, match="'.*/birds' is a symlink to the image folder or a "):
        scan_image_tree(str(root))


# ---------------------------------------------------------------------------------------------
# Bombs and size limits: refused from the header, before decoding


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """The width x height of every image decoded during the test (decoding still happens)."""
    sizes: list[int] = []
    real = tf.io.decode_image

    def recording(contents, *args, **kwargs):
        image = real(contents, *args, **kwargs)
        sizes.append(int(image.shape[0]) * int(image.shape[1]))
        return image

    monkeypatch.setattr(tf.io, "decode_image", recording)
    return sizes


def test_png_bomb_is_refused_from_its_header(tmp_path, decoded, monkeypatch):
    bomb = png_bomb(23000)
    assert len(bomb) < 100_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL refuses it too, by default
    with Image.open(io.BytesIO(bomb)) as im:  # a valid PNG: PIL reads its header...
        assert im.size == (23000, 23000)
    z, at, size = zlib.decompressobj(), 41, 0  # ...and its IDAT holds all the rows
    while piece := z.decompress(z.unconsumed_tail or bomb[at:-12], 1 << 20):
        at, size = len(bomb) - 12, size + len(piece)
    assert size == 23000 * (1 + 23000 // 8)  # a filter byte and 1 bit a pixel per row
    reason = f"too large: 23000x23000 pixels (limit {LIMIT})"
    assert inspect_image(bomb, 32) == (None, reason)

    root = make_tree(tmp_path / "data")
    (root / "cats" / "bomb.png").write_bytes(bomb)
    (root / "dogs" / "wide.png").write_bytes(png(2**31 - 1, 1))  # even 32-bit overflow sizes
    result = convert_image_tree(str(root), str(tmp_path / "out"),
                                SplitSettings(max_image_pixels=10**6))  # photos are smaller
    by_path = outcomes(result)
    assert by_path["cats/bomb.png"]["reason"] == "too large: 23000x23000 pixels (limit 1000000)"
    assert by_path["dogs/wide.png"]["reason"] == (
        "too large: 2147483647x1 pixels (limit 1000000)")
    assert result.report["skipped_by_reason"] == {"too large": 2}
    assert len(decoded) == 6 and max(decoded) < 10**6  # the photos only


def test_large_jpeg_is_refused_from_its_header_with_a_human_reason(decoded):
    big = with_jpeg_size(photos("cats")[0].read_bytes(), 16000, 16000)
    assert inspect_image(big, 32) == (None, f"too large: 16000x16000 pixels (limit {LIMIT})")
    # The limit is a setting: a real photo over a small limit, with its real size.
    photo = photos("dogs")[0]
    with Image.open(photo) as im:
        width, height = im.size
    assert inspect_image(photo.read_bytes(), 32, max_pixels=1000) == (
        None, f"too large: {width}x{height} pixels (limit 1000)")
    assert decoded == []


def test_header_sizes_agree_with_pil():
    for photo in sorted(MINI.rglob("*.jpg")):
        with Image.open(photo) as im:
            assert image_size(photo.read_bytes(), "jpeg")[:2] == im.size, photo
    for fmt, ext in (("png", "PNG"), ("bmp", "BMP"), ("gif", "GIF")):
        buf = io.BytesIO()
        Image.new("RGB", (70, 40)).save(buf, format=ext)
        assert image_size(buf.getvalue(), fmt) == (70, 40, 2800), fmt


def test_gif_counts_the_pixels_of_every_frame(decoded):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (100, 100), dtype=np.uint8), "L")
              for _ in range(5)]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert image_size(buf.getvalue(), "gif")[2] == 5 * 100 * 100
    assert inspect_image(buf.getvalue(), 32, max_pixels=20_000) == (
        None, "too large: 50000 pixels in all GIF frames (limit 20000)")
    assert decoded == []


def test_files_over_the_size_limit_are_not_read(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "data")
    huge = root / "cats" / "huge.jpg"
    with open(huge, "wb") as f:  # 10 GiB, sparse: takes no disk, and must never be read
        f.write(photos("cats")[0].read_bytes()[:100])
        f.truncate(10 * 2**30)
    reads = []
    real_read = os.read
    monkeypatch.setattr(reading.os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    result = convert_image_tree(str(root), str(tmp_path / "out"))
    assert outcomes(result)["cats/huge.jpg"]["reason"] == (
        f"file too large: {10 * 2**30} bytes (limit {64 * 2**20})")
    assert max(reads) <= 2**20  # read in chunks of at most 1 MiB
    sizes = sorted(p.stat().st_size for p in root.glob("*/*.jpg") if p != huge)
    small = convert_image_tree(str(root), str(tmp_path / "out"),
                               SplitSettings(max_file_bytes=sizes[2]))
    too_large = [f for f in small.report["files"] if f.get("reason", "").startswith("file too")]
    assert len(too_large) == 4  # the huge one and the three photos larger than the limit
    assert_reconciles(small.report)


# ---------------------------------------------------------------------------------------------
# Reasons and class checks


def test_skip_reasons_are_short_and_human(tmp_path):
    root = make_tree(tmp_path / "data")
    data = photos("cats")[3].read_bytes()
    (root / "cats" / "truncated.jpg").write_bytes(data[:len(data) // 3])
    (root / "cats" / "header_only.jpg").write_bytes(data[:300])
    (root / "dogs" / "garbage.png").write_bytes(png(64, 64, b"not zlib at all"))
    (root / "dogs" / "no_ihdr.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "dogs" / "bad.gif").write_bytes(b"GIF89a" + struct.pack("<HH", 64, 64) + b"\0" * 30)
    (root / "dogs" / "bad.bmp").write_bytes(b"BM" + b"\x01" * 60)
    result = convert_image_tree(str(root), str(tmp_path / "out"))
    reasons = {f["path"]: f["reason"] for f in result.report["files"] if "reason" in f}
    assert reasons["dogs/garbage.png"] == "undecodable png"
    assert reasons["dogs/no_ihdr.png"] == "undecodable png (no image size in the header)"
    assert reasons["dogs/bad.gif"].startswith("undecodable gif")
    assert reasons["dogs/bad.bmp"].startswith(("undecodable bmp", "too large"))
    assert reasons["cats/header_only.jpg"].startswith("undecodable jpeg")
    for path, reason in reasons.items():
        assert len(reason) < 80 and "\n" not in reason, (path, reason)
        assert not any(s in reason for s in ("{{", "node", "__wrapped__", "Op:", "[")), reason
    assert set(result.report["skipped_by_reason"]) <= {"undecodable jpeg", "undecodable png",
                                                       "undecodable gif", "undecodable bmp",
                                                       "too large"}
    assert_reconciles(result.report)


def test_class_missing_from_validation_is_an_error_before_writing(tmp_path):
    root = tmp_path / "data"
    make_tree(root / "train")
    make_tree(root / "validation", classes=("cats",))
    out = tmp_path / "out"
    with pytest.raises(IngestError) as e:
        convert_image_tree(str(root), str(out))
    assert str(e.value) == ("class 'dogs' has 3 files in train/ and 0 in validation/ "
                            "(validation/dogs/ is missing); every class needs images in both")
    assert not out.exists()
    (root / "validation" / "dogs").mkdir()
    with pytest.raises(IngestError, match=r"\(validation/dogs/ is empty\)"):
        convert_image_tree(str(root), str(out))


def test_empty_class_folder_is_an_error_before_writing(tmp_path):
    root = make_tree(tmp_path / "data")
    (root / "x").mkdir()
    (root / "x" / ".DS_Store").write_bytes(b"\0")  # hidden files are not images
    out = tmp_path / "out"
    with pytest.raises(IngestError, match=r"^class 'x' has no images"):
        convert_image_tree(str(root), str(out))
    assert not out.exists()


def test_class_whose_files_are_all_unusable_is_an_error(tmp_path):
    root = make_tree(tmp_path / "data")
    (root / "x").mkdir()
    (root / "x" / "a.jpg").write_text("not an image")
    (root / "x" / "b.png").write_bytes(png_bomb(8000))
    with pytest.raises(IngestError) as e:
        convert_image_tree(str(root), str(tmp_path / "out"))
    assert str(e.value) == ("class 'x' has no usable images: all 2 files were skipped "
                            "(not an image: 1, too large: 1)")
    assert not list((tmp_path / "out").glob("*/_COMPLETE"))


def test_a_url_root_takes_the_tf_io_gfile_path(tmp_path):
    root = make_tree(tmp_path / "data")
    (root / "cats" / "notes.jpg").write_text("not an image")
    (root / "stray.txt").write_text("stray")
    result = convert_image_tree(f"file://{root}", str(tmp_path / "out"))
    by_path = outcomes(result)
    assert by_path["cats/notes.jpg"]["reason"].startswith("not an image")
    assert by_path["stray.txt"]["reason"] == "not in a class folder"
    assert result.report["per_class"]["cats"] == {"inputs": 4, "written": 3, "skipped": 1}
    assert_reconciles(result.report)
