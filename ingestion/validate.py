"""Reading and validating one file: the size from its header, then one decode."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import apache_beam as beam
import tensorflow as tf

from contract import features
from contract.image_header import DEFAULT_MAX_IMAGE_PIXELS, image_size, pixel_limit_reason
from ingestion.near_duplicates import perceptual_hash
from ingestion.reading import read_source
from ingestion.scan import SourceFile
from ingestion.settings import SplitSettings

LOG = logging.getLogger("ingestion")


def inspect_image(data: bytes, min_side: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
                  ) -> tuple[dict | None, str | None]:
    """Validates an image: the size from its header first, then one decode.

    An image larger than max_pixels is refused from its header, before decoding (a small file
    can declare a huge image: a decompression bomb).

    Args:
      data: the file's bytes.
      min_side: the smallest allowed height and width, in pixels.
      max_pixels: the most pixels decoding may produce (width x height; all frames of a GIF).

    Returns:
      ({"format", "height", "width", "phash"}, None) for a usable image (phash: its
      perceptual hash, see near_duplicates.py), else (None, a one-line human
      skip reason such as "undecodable jpeg" or "too large: 23000x23000 pixels (limit ...)").
    """
    if not data:
        return None, "empty file"
    fmt = features.image_format(data)
    if fmt is None:
        return None, f"not an image (not {features.IMAGE_FORMATS})"
    size = image_size(data, fmt)
    if size is None:
        return None, f"undecodable {fmt} (no image size in the header)"
    too_large = pixel_limit_reason(size, max_pixels)
    if too_large:
        return None, too_large
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as e:
        LOG.debug("undecodable %s: %s", fmt, e)
        return None, f"undecodable {fmt}"
    height, width = int(image.shape[0]), int(image.shape[1])
    if min(height, width) < min_side:
        return None, f"too small ({width}x{height} px, minimum side {min_side})"
    return {"format": fmt, "height": height, "width": width,
            "phash": perceptual_hash(image)}, None


def read_image(location: str | bytes, settings: SplitSettings
               ) -> tuple[bytes | None, dict | None, str | None]:
    """Reads one file and validates it as an image (read_source, then inspect_image).

    Args:
      location: a local path (str or bytes) or a tf.io.gfile URL.
      settings: the limits: max_file_bytes, min_image_side, max_image_pixels.

    Returns:
      (the bytes, inspect_image's info, None) for a usable image, else (None, None, a one-line
      skip reason).
    """
    data, reason = read_source(location, settings.max_file_bytes)
    if reason is None:
        info, reason = inspect_image(data, settings.min_image_side, settings.max_image_pixels)
        if reason is None:
            return data, info, None
    return None, None, reason


class DecodeAndValidate(beam.DoFn):
    """Reads and decodes one file; emits a record, or a skip on the 'skipped' output.

    The record holds the file's hashes and size, not its bytes: the de-duplication and the
    split plan hold every record at once (an in-memory runner keeps each shuffled collection
    whole), and ReadKept reads the kept files again to write them.
    """

    SKIPPED = "skipped"

    def __init__(self, root: str, classes: list[str], settings: SplitSettings, total: int):
        self._root, self._classes, self._settings, self._total = root, classes, settings, total
        self._seen = 0

    def _skip(self, source: SourceFile, reason: str) -> beam.pvalue.TaggedOutput:
        beam.metrics.Metrics.counter("ingest", "skipped").inc()
        return beam.pvalue.TaggedOutput(
            self.SKIPPED, (source.path, reason, self._classes[source.label]))

    def process(self, source: SourceFile) -> Iterator:
        """Yields the record of a decodable file, or (path, reason, class) on the skipped output."""
        self._seen += 1
        if self._seen % 250 == 0:
            LOG.info("decoded %d/%d files (this worker)", self._seen, self._total)
        data, info, reason = read_image(source.location(self._root), self._settings)
        if reason:
            yield self._skip(source, reason)
            return
        beam.metrics.Metrics.counter("ingest", "decoded").inc()
        yield {"source": source, "sha256": hashlib.sha256(data).hexdigest(),
               "label_name": self._classes[source.label], **info}


class ReadKept(beam.DoFn):
    """Reads a kept file again for writing: (split, record with "data"), or a skip on the
    'skipped' output when the file can no longer be read or its content changed since it was
    decoded."""

    SKIPPED = DecodeAndValidate.SKIPPED

    def __init__(self, root: str, classes: list[str], settings: SplitSettings):
        self._root, self._classes, self._settings = root, classes, settings

    def process(self, split_record: tuple[str, dict]) -> Iterator:
        """Yields (split, record + data), or (path, reason, class) on the skipped output."""
        split, record = split_record
        source = record["source"]
        data, reason = read_source(source.location(self._root), self._settings.max_file_bytes)
        if reason is None and hashlib.sha256(data).hexdigest() != record["sha256"]:
            reason = "changed while being converted (content differs from the decoded file)"
        if reason:
            beam.metrics.Metrics.counter("ingest", "skipped").inc()
            yield beam.pvalue.TaggedOutput(self.SKIPPED, (source.path, reason,
                                                          self._classes[source.label]))
            return
        yield split, {**record, "data": data}

