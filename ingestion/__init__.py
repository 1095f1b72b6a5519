"""Ingestion: an image folder -> TFRecords of tf.Example and an accounting report (a Beam job).

It runs before the TFX pipeline (ImportExampleGen reads its output) and depends only on
`contract/`. Standalone: `tfx-image-transfer-ingest --data-dir DIR --output-dir TFRECORDS_DIR`.
"""

from contract import keras_env  # noqa: F401  (before TensorFlow loads)
