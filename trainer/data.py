"""tf.data input over the Examples: parse, decode (the shared function), cache, shuffle, batch."""

from __future__ import annotations

import tensorflow as tf

from contract import features
from trainer.config import TrainingConfig
from trainer.images import decode_and_resize


def feature_spec(*keys: str) -> dict[str, tf.io.FixedLenFeature]:
    """The tf.Example parse spec of the named features (contract.features.KINDS).

    Args:
      *keys: feature names, e.g. features.IMAGE_KEY.

    Returns:
      A spec for tf.io.parse_example / parse_single_example: one scalar per feature.
    """
    dtypes = {"bytes": tf.string, "int64": tf.int64}
    return {key: tf.io.FixedLenFeature([], dtypes[features.KINDS[key]]) for key in keys}


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


# The most an in-memory cache may hold: decoded float32 images kept between epochs (224 px:
# ~3,500 images), or phase 2's cached activations (trainer.fine_tune_cache).
CACHE_BUDGET_BYTES = 2 * 1024**3


def count_records(file_patterns: list[str] | str) -> int:
    """The number of records in the files (one read of them, no parsing).

    Args:
      file_patterns: TFRecord files.

    Returns:
      The record count.
    """
    return int(record_dataset(file_patterns).reduce(0, lambda n, _: n + 1))


def fits_in_budget(size_bytes: int) -> bool:
    """Whether an in-memory cache of this size is allowed (CACHE_BUDGET_BYTES).

    Args:
      size_bytes: the cache's size.

    Returns:
      True if it is at most the budget.
    """
    return size_bytes <= CACHE_BUDGET_BYTES


def fits_in_cache(count: int, image_size: int) -> bool:
    """Whether `count` decoded images fit in CACHE_BUDGET_BYTES.

    Without the bound, caching 16 times the tutorial's data at 224 px would hold ~19 GB.

    Args:
      count: the number of images.
      image_size: the side the images are resized to.

    Returns:
      True if their float32 [S, S, 3] images take at most the budget.
    """
    return fits_in_budget(count * image_size * image_size * 3 * 4)


def decoded_examples(file_patterns: list[str] | str, cfg: TrainingConfig,
                     cache: bool = True) -> tf.data.Dataset:
    """(float32 image [S, S, 3] in [0, 255], int64 label) per example, in file order.

    The records are counted first (a read of the files, a small cost next to decoding them),
    so that the dataset's length is known: Keras then shows epoch progress from the first
    epoch instead of warning that the input ran out of data. With `cache`, the decoded images
    are kept in memory by the first full pass when they fit (fits_in_cache), and every later
    pass over this dataset, or over any dataset built on it (`batched`), reads them from
    memory. Phase 1's feature pass is such a first pass, so phase 2's epochs do not decode
    again. Augmentation happens inside the model, so the cache holds plain images.

    Args:
      file_patterns: TFRecord files of tf.Examples: one glob pattern or a list of them.
      cfg: the knob used here: image_size (S).
      cache: keep the decoded images in memory if they fit in CACHE_BUDGET_BYTES; larger
        data is decoded again on every pass.

    Returns:
      The unbatched dataset.
    """
    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One serialized tf.Example -> (float32 image [S, S, 3], int64 label)."""
        spec = feature_spec(features.IMAGE_KEY, features.LABEL_KEY)
        parsed = tf.io.parse_single_example(serialized, spec)
        image = decode_and_resize(parsed[features.IMAGE_KEY], cfg.image_size)
        return image, parsed[features.LABEL_KEY]

    count = count_records(file_patterns)
    ds = record_dataset(file_patterns).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                           deterministic=True)
    if cache and fits_in_cache(count, cfg.image_size):
        ds = ds.cache()
    return ds.apply(tf.data.experimental.assert_cardinality(count))


def batched(examples: tf.data.Dataset, cfg: TrainingConfig, training: bool) -> tf.data.Dataset:
    """Batches of examples, reshuffled every pass when training, prefetched.

    Args:
      examples: unbatched (image, label) pairs, e.g. from decoded_examples.
      cfg: the knobs used here: batch_size (B; the last batch may be smaller),
        shuffle_buffer (examples) and seed.
      training: shuffle every pass.

    Returns:
      The batched dataset: (images [B, ...], labels [B]).
    """
    if training:
        examples = examples.shuffle(cfg.shuffle_buffer, seed=cfg.seed,
                                    reshuffle_each_iteration=True)
    return examples.batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE)


def binary_labels(batches: tf.data.Dataset) -> tf.data.Dataset:
    """The batches with their labels as the binary head's targets.

    Args:
      batches: (images, int64 labels [B]) batches.

    Returns:
      (images, float32 labels [B, 1]) batches.
    """
    return batches.map(lambda x, y: (x, tf.cast(y, tf.float32)[:, None]))


def input_fn(file_patterns: list[str] | str, cfg: TrainingConfig, training: bool,
             cache: bool = True) -> tf.data.Dataset:
    """Batches of (float32 images [B, S, S, 3] in [0, 255], int64 labels [B]): `batched`
    over `decoded_examples`.

    Args:
      file_patterns: TFRecord files of tf.Examples: one glob pattern or a list of them.
      cfg: the knobs used here: image_size, batch_size, shuffle_buffer and seed.
      training: shuffle every epoch.
      cache: keep the decoded images in memory after the first pass, if they fit.

    Returns:
      The batched, prefetched dataset.
    """
    return batched(decoded_examples(file_patterns, cfg, cache), cfg, training)
