"""tf.data input over the Examples: parse, decode (the shared function), cache, shuffle, batch."""

from __future__ import annotations

import tensorflow as tf

from contract import features as F
from trainer.images import decode_and_resize


def image_feature_spec(with_label: bool = False) -> dict[str, tf.io.FixedLenFeature]:
    """The tf.Example parse spec of the encoded image, and of the label when asked.

    Args:
      with_label: also parse the int64 class index.

    Returns:
      A spec for tf.io.parse_example / parse_single_example.
    """
    spec = {F.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    if with_label:
        spec[F.LABEL_KEY] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def list_files(patterns: list[str] | str) -> list[str]:
    """Expands file patterns (TFX passes `<split dir>/*`) into a sorted file list.

    Args:
      patterns: one glob pattern or a list of them.

    Returns:
      The matching file paths, sorted.

    Raises:
      FileNotFoundError: no file matches.
    """
    patterns = [patterns] if isinstance(patterns, str) else patterns
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {patterns}")
    return files


def record_dataset(file_patterns: list[str] | str) -> tf.data.TFRecordDataset:
    """Serialized tf.Examples of the matching files (gzipped when named *.gz, as ExampleGen
    writes them; plain as ingestion writes them).

    Args:
      file_patterns: one glob pattern or a list of them.

    Returns:
      A dataset of scalar strings, one per record.

    Raises:
      FileNotFoundError: no file matches.
    """
    files = list_files(file_patterns)
    return tf.data.TFRecordDataset(files, compression_type="GZIP" if files[0].endswith(".gz")
                                   else "", num_parallel_reads=tf.data.AUTOTUNE)


def input_fn(file_patterns: list[str] | str, image_size: int, batch_size: int,
             training: bool, shuffle_buffer: int = 1000, seed: int = 42) -> tf.data.Dataset:
    """Batches of (float32 images [B, S, S, 3] in [0, 255], int64 labels [B]).

    Decoded images are cached in memory after the first epoch; training data is reshuffled
    every epoch. Augmentation happens inside the model, so the cache holds plain images.

    Args:
      file_patterns: TFRecord files of tf.Examples: one glob pattern or a list of them.
      image_size: the side S images are resized to, in pixels.
      batch_size: the batch size B (the last batch may be smaller).
      training: shuffle every epoch.
      shuffle_buffer: the shuffle buffer size, in examples (training only).
      seed: the shuffle seed (training only).

    Returns:
      The batched, prefetched dataset.
    """

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One serialized tf.Example -> (float32 image [S, S, 3], int64 label)."""
        parsed = tf.io.parse_single_example(serialized, image_feature_spec(with_label=True))
        return decode_and_resize(parsed[F.IMAGE_KEY], image_size), parsed[F.LABEL_KEY]

    ds = record_dataset(file_patterns).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                           deterministic=True).cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
