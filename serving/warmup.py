"""TF Serving's warmup file: real requests that the server replays when it loads a version, so
the first client request does not pay for graph initialisation.

The file is `<version>/assets.extra/tf_serving_warmup_requests`, a TFRecord of
`PredictionLog` protos (https://www.tensorflow.org/tfx/serving/saved_model_warmup); the local
server replays it too. It is written at export, from a few training images."""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving.constants import IMAGES_INPUT, SIGNATURE_NAME
from trainer.data import record_dataset
from trainer.features import IMAGE_KEY

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_IMAGES = 4  # TF Serving caps the file at 1000 records; a few warm the graph up


def write_warmup_requests(export_dir: str, encoded_images: Sequence[bytes], model_name: str,
                          signature_name: str = SIGNATURE_NAME) -> str:
    """Writes the warmup file into the SavedModel at export_dir and returns its path.

    One single-image Predict request per image (the common case), then one request holding
    all of them (a batch, as server-side batching forms them).
    """
    if not encoded_images:
        raise ValueError("warmup needs at least one encoded image")
    batches = [[image] for image in encoded_images]
    if len(encoded_images) > 1:
        batches.append(list(encoded_images))
    path = os.path.join(export_dir, WARMUP_PATH)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            request.inputs[IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(path: str) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLog records of a warmup file."""
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(path)]


def read_encoded_images(file_patterns: list[str] | str, count: int = WARMUP_IMAGES) -> list[bytes]:
    """The first `count` encoded images (the `image` feature) of the tf.Examples in the
    TFRecord files matching file_patterns (gzipped when named *.gz, as ExampleGen writes)."""
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    records = record_dataset(file_patterns).take(count)
    return [tf.io.parse_single_example(r, spec)[IMAGE_KEY].numpy() for r in records]
