"""The model a batch prediction runs: a pushed SavedModel version, its labels, and the model
handler through which Beam's RunInference batches images into it.

The handler loads the version as TF Serving does (serving.server.loader: a TF1 session, the
warmup replayed) and runs `serving_default`, so each row is the answer the served model gives
for that image.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from contract import artifacts
from contract.interface import IMAGES_INPUT, LABELS_ASSET, PROBABILITIES, SERVING_SIGNATURE
from contract.labels import parse_labels
from serving.errors import ServingError
from serving.server.loader import SessionModel, load_like_tf_serving

DEFAULT_BATCH_SIZE = 16  # serving/batching.config's max_batch_size: memory as the server's


def resolve_version(path: str) -> str:
    """The SavedModel version a path names: itself, or a model base path's newest version.

    Args:
      path: a version directory, or a directory of numbered versions (as TF Serving's
        --model_base_path), local or a tf.io.gfile URL.

    Returns:
      The version directory.

    Raises:
      ValueError: no SavedModel there (one line).
    """
    if tf.io.gfile.exists(os.path.join(path, artifacts.SAVED_MODEL_FILE)):
        return path
    if not tf.io.gfile.isdir(path):
        raise ValueError(f"--model {path} is not a directory")
    for name in artifacts.version_names(tf.io.gfile.listdir(path)):
        if tf.io.gfile.exists(os.path.join(path, name, artifacts.SAVED_MODEL_FILE)):
            return os.path.join(path, name)
    raise ValueError(f"--model {path} holds no {artifacts.SAVED_MODEL_FILE}, nor numbered "
                     "versions that do")


def read_labels(version_dir: str) -> list[str]:
    """The class names of a version, by index (its assets/labels.txt).

    Args:
      version_dir: the SavedModel version directory.

    Returns:
      The names.

    Raises:
      ValueError: the version has no labels asset.
    """
    path = os.path.join(version_dir, "assets", LABELS_ASSET)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{version_dir} has no assets/{LABELS_ASSET}")
    with tf.io.gfile.GFile(path) as f:
        return parse_labels(f.read())


class ServedModelHandler(ModelHandler[bytes, PredictionResult, SessionModel]):
    """RunInference's handler for encoded images: batches of them run through the version's
    `serving_default` in one Session.run; an image the model refuses gets its own result
    with the model's message instead of failing the batch.

    Args:
      version_dir: the SavedModel version directory.
      batch_size: the most images per run.
    """

    def __init__(self, version_dir: str, batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        self._version_dir, self._batch_size = version_dir, batch_size

    def load_model(self) -> SessionModel:
        """Loads the version and replays its warmup file, as TF Serving does.

        Returns:
          The loaded model.
        """
        model, _ = load_like_tf_serving(self._version_dir)
        return model

    def run_inference(self, batch: Sequence[bytes], model: SessionModel,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        """The probabilities of each image of a batch.

        Args:
          batch: encoded images.
          model: the loaded version.
          inference_args: unused.

        Returns:
          One PredictionResult per image: inference is the probabilities (a float array), or
          the model's one-line refusal (a str) for an image it does not answer.
        """
        try:
            probabilities = self._run(model, batch)
        except ServingError:
            # One image the graph refuses fails the whole run: run each alone to name it.
            return [self._one(model, image) for image in batch]
        return [PredictionResult(image, row) for image, row in zip(batch, probabilities,
                                                                   strict=True)]

    def _one(self, model: SessionModel, image: bytes) -> PredictionResult:
        try:
            return PredictionResult(image, self._run(model, [image])[0])
        except ServingError as e:
            return PredictionResult(image, f"refused by the model: {e}")

    @staticmethod
    def _run(model: SessionModel, images: Sequence[bytes]) -> np.ndarray:
        outputs = model.run(SERVING_SIGNATURE, {IMAGES_INPUT: np.array(list(images), dtype=object)},
                            [PROBABILITIES])
        return outputs[PROBABILITIES]

    def batch_elements_kwargs(self) -> dict[str, int]:
        """RunInference's batching: at most batch_size images per run.

        Returns:
          BatchElements' arguments.
        """
        return {"min_batch_size": 1, "max_batch_size": self._batch_size}

    def get_num_bytes(self, batch: Sequence[bytes]) -> int:
        """The bytes of a batch of encoded images (RunInference's byte metric).

        Args:
          batch: encoded images.

        Returns:
          Their total size.
        """
        return sum(len(image) for image in batch)
