"""What a batch prediction reads: every file below a folder (any layout ingestion reads, or a
flat folder), or the images of TFRecord files of tf.Examples; files are read and checked as
ingestion checks them, so a file is skipped for the same reason it would be skipped there."""

from __future__ import annotations

import os
from dataclasses import dataclass

import tensorflow as tf

from contract import features
from ingestion.names import is_remote, printable
from ingestion.settings import SplitSettings
from ingestion.validate import inspect_image, read_image
from ingestion.walk import walk


class InputError(ValueError):
    """An input that cannot be read at all (one line for the user)."""


@dataclass(frozen=True)
class Candidate:
    """A file to classify: its path relative to the folder, as printable text, and where to
    open it (a URL, or the local path as bytes so that any name opens)."""

    path: str
    location: str | bytes


def list_folder(root: str) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Every file below a folder, and the entries skipped without opening them.

    Args:
      root: the folder (local path or tf.io.gfile URL).

    Returns:
      (the candidates, sorted by path; (path, reason) of each entry skipped as ingestion skips
      it: hidden files, non-regular files, directory symlinks, symlink loops).
    """
    candidates, skipped = [], []
    for parts, reason in walk(root):
        path = "/".join(printable(p) for p in parts)
        if reason is None and any(p.startswith(".") for p in parts):
            reason = "hidden file"
        if reason is not None:
            skipped.append((path, reason))
        elif is_remote(root):
            candidates.append(Candidate(path, os.path.join(root, *parts)))
        else:
            candidates.append(Candidate(path, os.path.join(os.fsencode(root),
                                                           os.fsencode(os.path.join(*parts)))))
    return sorted(candidates, key=lambda c: c.path), sorted(skipped)


def tfrecord_files(pattern: str) -> list[str]:
    """The files a TFRecord glob pattern matches.

    Args:
      pattern: e.g. "data/test/*.gz" or "gs://bucket/examples-*".

    Returns:
      The files, sorted.

    Raises:
      InputError: the pattern matches no file.
    """
    try:
        files = sorted(tf.io.gfile.glob(pattern))
    except tf.errors.OpError as e:
        raise InputError(f"cannot list {pattern}: {e.message}") from None
    if not files:
        raise InputError(f"{pattern} is neither a folder nor a pattern that matches files")
    return files


def read_candidate(candidate: Candidate,
                   settings: SplitSettings) -> tuple[bytes | None, str | None]:
    """A candidate's bytes, or why it is skipped (ingestion's reasons).

    Args:
      candidate: the file.
      settings: the size limits (max_file_bytes, max_image_pixels, min_image_side).

    Returns:
      (bytes, None) for an image ingestion would keep, else (None, the reason).
    """
    data, _, reason = read_image(candidate.location, settings)
    return data, reason


def example_image(serialized: bytes, settings: SplitSettings,
                  where: str) -> tuple[str, bytes | None, str | None]:
    """The image of a serialized tf.Example, checked as a file would be.

    Args:
      serialized: the record.
      settings: the size limits.
      where: "<file>#<record index>", the path used when the Example names none.

    Returns:
      (its path feature or `where`, the bytes or None, None or the reason it is skipped).
    """
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception:  # a DecodeError, or a RuntimeWarning from the C++ parser
        return where, None, "not a tf.Example"
    feature = example.features.feature
    path_values = feature[features.PATH_KEY].bytes_list.value if features.PATH_KEY in feature \
        else []
    path = path_values[0].decode("utf-8", "replace") if path_values else where
    images = feature[features.IMAGE_KEY].bytes_list.value if features.IMAGE_KEY in feature \
        else []
    if len(images) != 1:
        return path, None, f"no single {features.IMAGE_KEY!r} bytes feature"
    _, reason = inspect_image(images[0], settings.min_image_side, settings.max_image_pixels)
    return path, (None if reason else images[0]), reason
