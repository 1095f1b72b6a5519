"""A kept image as a serialized tf.Example (the format is contract/features.py's)."""

from __future__ import annotations

import tensorflow as tf

from contract import features


def _feature(kind: str, value: str | bytes | int) -> tf.train.Feature:
    """A one-value feature of the kind contract.features.KINDS gives (str is UTF-8 encoded)."""
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    value = value.encode() if isinstance(value, str) else value
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def to_example(record: dict) -> bytes:
    """The serialized tf.Example of one kept image (format in contract/features.py).

    Args:
      record: a record from ReadKept (source, data, sha256, label_name, format,
        height, width).

    Returns:
      The serialized tf.Example.
    """
    source = record["source"]
    values = {features.IMAGE_KEY: record["data"], features.LABEL_KEY: source.label,
              features.LABEL_NAME_KEY: record["label_name"], features.PATH_KEY: source.path,
              features.SHA256_KEY: record["sha256"], features.HEIGHT_KEY: record["height"],
              features.WIDTH_KEY: record["width"], features.FORMAT_KEY: record["format"]}
    example = tf.train.Example(features=tf.train.Features(feature={
        key: _feature(features.KINDS[key], value) for key, value in values.items()}))
    return example.SerializeToString()

