"""The tf.Example format: written by ingestion, read by the Trainer, TFMA and the signatures."""

from __future__ import annotations

IMAGE_KEY = "image"  # the original encoded bytes (JPEG/PNG/GIF/BMP)
LABEL_KEY = "label"  # int64 class index into the sorted class names
LABEL_NAME_KEY = "label_name"
PATH_KEY = "path"  # path relative to the image folder
SHA256_KEY = "sha256"
HEIGHT_KEY = "height"
WIDTH_KEY = "width"
FORMAT_KEY = "format"  # jpeg | png | gif | bmp

# Each feature's tf.train.Feature list: "bytes" (bytes_list) or "int64" (int64_list), one value.
KINDS = {IMAGE_KEY: "bytes", LABEL_KEY: "int64", LABEL_NAME_KEY: "bytes", PATH_KEY: "bytes",
         SHA256_KEY: "bytes", HEIGHT_KEY: "int64", WIDTH_KEY: "int64", FORMAT_KEY: "bytes"}

# Statistics and schema cover the metadata; raw bytes, unique paths and hashes are left out.
STATISTICS_FEATURES = (LABEL_KEY, LABEL_NAME_KEY, HEIGHT_KEY, WIDTH_KEY)

SPLITS = ("train", "eval", "test")

# The encodings the project reads, by their leading bytes: ingestion, the served graph
# (trainer/images.py; tf.io.decode_image also reads WebP and JPEG XL, which the graph refuses)
# and the client.
IMAGE_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"),
          (b"GIF89a", "gif"), (b"BM", "bmp"))
IMAGE_FORMATS = "JPEG, PNG, GIF or BMP"


def image_format(data: bytes) -> str | None:
    """"jpeg", "png", "gif" or "bmp" by the leading bytes, else None.

    Args:
      data: the file's bytes; only the first few are looked at.

    Returns:
      The format name, or None if the bytes match none of IMAGE_FORMATS.
    """
    return next((name for magic, name in IMAGE_MAGIC if data.startswith(magic)), None)
