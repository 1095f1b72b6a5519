"""The served model on the raw test images: what the report's pictures and galleries show."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from contract import features
from contract.interface import LABELS_ASSET, PROBABILITIES, SERVING_SIGNATURE
from contract.labels import parse_labels
from trainer.data import feature_spec, record_dataset

_PREDICT_BATCH = 64


def read_split(examples_uri: str, split: str) -> tuple[list[bytes], np.ndarray, list[str]]:
    """Encoded images, labels and paths of one split of an Examples artifact.

    Args:
      examples_uri: the Examples artifact's uri.
      split: the split name, e.g. "test".

    Returns:
      The encoded images, the labels (int64 [N]) and the source paths, in record order.
    """
    spec = feature_spec(features.IMAGE_KEY, features.LABEL_KEY, features.PATH_KEY)
    images, labels, paths = [], [], []
    for record in record_dataset(os.path.join(examples_uri, f"Split-{split}", "*")):
        parsed = tf.io.parse_single_example(record, spec)
        images.append(parsed[features.IMAGE_KEY].numpy())
        labels.append(int(parsed[features.LABEL_KEY]))
        paths.append(parsed[features.PATH_KEY].numpy().decode())
    return images, np.array(labels, dtype=np.int64), paths


def _spec(spec: Any) -> dict[str, Any]:
    return {"dtype": spec.dtype.name,
            "shape": [None if d is None else int(d) for d in spec.shape.as_list()]}


def predict(model_dir: str, images: list[bytes]) -> tuple[np.ndarray, list[str], dict]:
    """Probabilities [N, classes] from the serving signature, the class names and the
    signature's description.

    Args:
      model_dir: the SavedModel directory (serving signature and labels asset).
      images: encoded images, sent in batches of 64.

    Returns:
      The probabilities (float32 [N, classes]), the class names by index (whole lines of
      assets/labels.txt) and {"name", "inputs", "outputs": {name: {"dtype", "shape"}}}.
    """
    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures[SERVING_SIGNATURE]
    chunks = [serve(images=tf.constant(images[i:i + _PREDICT_BATCH]))[PROBABILITIES].numpy()
              for i in range(0, len(images), _PREDICT_BATCH)]
    with tf.io.gfile.GFile(os.path.join(model_dir, "assets", LABELS_ASSET)) as f:
        classes = parse_labels(f.read())
    signature = {"name": SERVING_SIGNATURE,
                 "inputs": {k: _spec(v) for k, v in serve.structured_input_signature[1].items()},
                 "outputs": {k: _spec(v) for k, v in serve.structured_outputs.items()}}
    width = len(classes)
    probabilities = np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)
    return probabilities, classes, signature


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class].

    Args:
      labels: the true class indices, int [N].
      predicted: the predicted class indices, int [N].
      num_classes: the number of classes.

    Returns:
      The counts, int64 [num_classes, num_classes].
    """
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def balanced_sample(labels: np.ndarray, num_classes: int, count: int) -> list[int]:
    """Indices of up to `count` examples, as many of each class as the classes allow.

    Args:
      labels: the true class indices, int [N].
      num_classes: the number of classes.
      count: the number wanted; every class gets ceil(count / num_classes) places.

    Returns:
      Indices grouped by class in class order, each class's in record order.
    """
    per_class = -(-count // num_classes)
    return [int(i) for c in range(num_classes) for i in np.flatnonzero(labels == c)[:per_class]]


def confident_mistakes(labels: np.ndarray, probabilities: np.ndarray, count: int) -> list[int]:
    """Indices of the wrong predictions, the most confident first.

    Args:
      labels: the true class indices, int [N].
      probabilities: the predicted probabilities, float [N, classes].
      count: the most to return.

    Returns:
      Up to `count` indices, by the predicted class's probability, highest first.
    """
    predicted = np.argmax(probabilities, axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")
    return [int(i) for i in wrong[order][:count]]


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """The reliability diagram's numbers: top-class confidence against accuracy, per bin.

    Args:
      labels: the true class indices, int [N].
      probabilities: the predicted probabilities, float [N, classes].
      bins: equal-width confidence bins over [0, 1].

    Returns:
      {"edges": [bins + 1], "count", "confidence", "accuracy": [per bin; None where empty],
       "ece": the expected calibration error (count-weighted |accuracy - confidence|)}.
    """
    confidence = probabilities.max(axis=1)
    correct = np.argmax(probabilities, axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count, mean_conf, accuracy, ece = [], [], [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        count.append(n)
        mean_conf.append(float(confidence[mask].mean()) if n else None)
        accuracy.append(float(correct[mask].mean()) if n else None)
        if n:
            ece += n * abs(accuracy[-1] - mean_conf[-1])
    return {"edges": [float(e) for e in edges], "count": count, "confidence": mean_conf,
            "accuracy": accuracy, "ece": ece / max(1, len(labels))}


def thumbnail(image: bytes, size: int = 160) -> bytes:
    """A JPEG of the image scaled to fit size x size, for the page's galleries.

    Args:
      image: an encoded image.
      size: the longer side, in pixels.

    Returns:
      The JPEG bytes.
    """
    pixels = tf.io.decode_image(image, channels=3, expand_animations=False)
    small = tf.image.resize(pixels, (size, size), preserve_aspect_ratio=True, antialias=True)
    return tf.io.encode_jpeg(tf.cast(tf.round(small), tf.uint8), quality=85).numpy()
