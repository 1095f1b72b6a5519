"""TF Serving's warmup file, written at export: real requests that the server replays when it
loads a version, so the first client request does not pay for graph initialisation.

The file is `<version>/assets.extra/tf_serving_warmup_requests` (`WARMUP_FILE`), a TFRecord
of `PredictionLog` protos (https://www.tensorflow.org/tfx/serving/saved_model_warmup).
TF Serving, the local server and the pipeline's serving check replay it at load.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from contract.features import IMAGE_KEY
from contract.interface import IMAGES_INPUT, SERVING_SIGNATURE, WARMUP_FILE
from trainer.data import feature_spec, record_dataset

WARMUP_IMAGES = 4  # TF Serving caps the file at 1000 records; a few warm the graph up
SAMPLE_BUFFER = 2000  # records a sample is drawn from (read_encoded_images)


def write_warmup_requests(export_dir: str, encoded_images: Sequence[bytes],
                          model_name: str) -> str:
    """Writes the warmup file into the SavedModel at export_dir.

    One single-image Predict request per image (the common case), then one request holding
    all of them (a batch, as server-side batching forms them).

    Args:
      export_dir: the SavedModel directory (a version directory once pushed).
      encoded_images: encoded JPEG/PNG/GIF/BMP images, at least one.
      model_name: the model name the requests carry (TF Serving ignores it on replay).

    Returns:
      The path of the written file.

    Raises:
      ValueError: encoded_images is empty.
    """
    if not encoded_images:
        raise ValueError("warmup needs at least one encoded image")
    batches = [[image] for image in encoded_images]
    if len(encoded_images) > 1:
        batches.append(list(encoded_images))
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = SERVING_SIGNATURE
            request.inputs[IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_encoded_images(file_patterns: list[str] | str, count: int = WARMUP_IMAGES,
                        sample_seed: int | None = None) -> list[bytes]:
    """The first images of a split (for the warmup requests), or a sample of them.

    Args:
      file_patterns: TFRecord files of tf.Examples (gzipped when named *.gz, as ExampleGen
        writes them).
      count: how many images at most.
      sample_seed: when given, `count` examples drawn from a shuffle buffer of
        SAMPLE_BUFFER with this seed, rather than the first ones.

    Returns:
      The encoded bytes of the `image` feature of the chosen examples.
    """
    records = record_dataset(file_patterns)
    if sample_seed is not None:
        records = records.shuffle(SAMPLE_BUFFER, seed=sample_seed)
    records = records.take(count)
    return [tf.io.parse_single_example(r, feature_spec(IMAGE_KEY))[IMAGE_KEY].numpy()
            for r in records]
