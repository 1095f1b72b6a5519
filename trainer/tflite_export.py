"""The on-device models: TFLite conversions of the trained model for phones.

Both forms take what a mobile app has after decoding a photo, uint8 RGB pixels
[1, size, size, 3] (contract.interface.PIXELS_INPUT), and give the class probabilities
(float32 [1, classes]); the model's own rescaling to MobileNetV2's [-1, 1] is inside them.

* float16: weights stored as float16, computed in float32 (about half the file).
* int8: full-integer quantization (TFLITE_BUILTINS_INT8), activations calibrated on training
  photos; the input stays uint8 pixels (the first op casts them), the output float32.

The labels file (contract.labels' format) is written beside them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from contract.artifacts import TFLITE_FORMS, tflite_file
from contract.interface import LABELS_ASSET, PIXELS_INPUT, PROBABILITIES, SERVING_SIGNATURE
from contract.labels import format_labels
from trainer.export import probabilities_of
from trainer.images import device_pixels

LOG = logging.getLogger(__name__)
# Beside the SavedModel's Format-Serving in the Trainer's Model artifact (TFX's layout).
TFLITE_MODEL_DIR = "Format-TFLite"
# Training photos the int8 conversion calibrates its activation ranges on (TFLite's guide
# suggests 100 to 500).
CALIBRATION_IMAGES = 128


def tflite_model_dir(serving_model_dir: str) -> str:
    """Where the Trainer writes the on-device models: beside its serving model folder.

    Args:
      serving_model_dir: the Trainer's <model artifact>/Format-Serving.

    Returns:
      <model artifact>/Format-TFLite.
    """
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), TFLITE_MODEL_DIR)


def _pixel_model(model: keras.Model, image_size: int, export_dir: str) -> None:
    """A SavedModel of the model on one image of uint8 pixels, the converter's input."""

    def serve_pixels(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return {PROBABILITIES: probabilities_of(model(tf.cast(pixels, tf.float32),
                                                      training=False))}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_SIGNATURE, serve_pixels,
                         [tf.TensorSpec([1, image_size, image_size, 3], tf.uint8,
                                        name=PIXELS_INPUT)])
    archive.write_out(export_dir, verbose=False)


def convert(pixel_model_dir: str, form: str, calibration: np.ndarray) -> bytes:
    """One on-device form of a pixel-input SavedModel.

    Args:
      pixel_model_dir: a SavedModel whose serving_default takes uint8 [1, size, size, 3].
      form: "float16" or "int8" (contract.artifacts.TFLITE_FORMS).
      calibration: uint8 [N, size, size, 3] training images (used by int8 only).

    Returns:
      The .tflite flatbuffer.

    Raises:
      ValueError: an unknown form, or no calibration images for int8.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(pixel_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if form == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif form == "int8":
        if not len(calibration):
            raise ValueError("the int8 model needs calibration images")

        def representative() -> Iterator[list[np.ndarray]]:
            for image in calibration:
                yield [image[np.newaxis]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    else:
        raise ValueError(f"unknown on-device form {form!r}; one of {', '.join(TFLITE_FORMS)}")
    return converter.convert()


def write_tflite_models(model: keras.Model, class_names: list[str], image_size: int,
                        calibration_images: Sequence[bytes], out_dir: str) -> dict[str, str]:
    """Writes every on-device form and the labels file into out_dir.

    Args:
      model: the trained Keras model (float images [N, size, size, 3] in [0, 255] -> logits).
      class_names: the class names by index.
      image_size: the side of the input image.
      calibration_images: encoded training photos for the int8 calibration (the first
        CALIBRATION_IMAGES are used).
      out_dir: where to write (a local path or tf.io.gfile URI); created.

    Returns:
      form -> the written file's path.
    """
    calibration = device_pixels(tf.constant(list(calibration_images[:CALIBRATION_IMAGES])),
                                image_size).numpy()
    tf.io.gfile.makedirs(out_dir)
    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        _pixel_model(model, image_size, tmp)
        for form in TFLITE_FORMS:
            path = os.path.join(out_dir, tflite_file(form))
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(convert(tmp, form, calibration))
            written[form] = path
            LOG.info("on-device model %s: %d bytes", form, tf.io.gfile.stat(path).length)
    with tf.io.gfile.GFile(os.path.join(out_dir, LABELS_ASSET), "w") as f:
        f.write(format_labels(class_names))
    return written


def load_interpreter(tflite_model: bytes) -> tf.lite.Interpreter:
    """TFLite's interpreter for a model, its tensors allocated.

    Args:
      tflite_model: a .tflite flatbuffer.

    Returns:
      The interpreter.
    """
    with warnings.catch_warnings():  # tf.lite.Interpreter's notice that LiteRT succeeds it
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=tflite_model)
    interpreter.allocate_tensors()
    return interpreter


def photo_runner(interpreter: tf.lite.Interpreter) -> Callable[[np.ndarray], np.ndarray]:
    """One photo at a time through an interpreter (load_interpreter), as a phone runs it.

    Args:
      interpreter: an on-device model's interpreter.

    Returns:
      A function: uint8 pixels [1, size, size, 3] -> float32 probabilities [classes] (a copy).
    """
    (image,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(pixels: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(image["index"], pixels)
        interpreter.invoke()
        return interpreter.get_tensor(output["index"])[0].copy()

    return run


def tflite_probabilities(tflite_model: bytes, pixels: np.ndarray) -> np.ndarray:
    """Runs an on-device model over images one at a time, as a phone runs it.

    Args:
      tflite_model: a .tflite flatbuffer from convert.
      pixels: uint8 [N, size, size, 3] (trainer.images.device_pixels).

    Returns:
      float32 [N, classes]: the probabilities.
    """
    interpreter = load_interpreter(tflite_model)
    run = photo_runner(interpreter)
    rows = [run(one[np.newaxis]) for one in pixels]
    classes = interpreter.get_output_details()[0]["shape"][-1]
    return np.stack(rows) if rows else np.zeros((0, classes), np.float32)
