"""SavedModel export with Keras 3: raw image bytes in, class probabilities and names out.

Signatures:
  * ``serving_default``: ``images`` (string [None], encoded JPEG/PNG/GIF/BMP bytes) ->
    ``probabilities`` (float [None, N]), ``class_index`` (int64 [None]), ``class_name``
    (string [None]). TF Serving's REST API turns ``{"b64": ...}`` into these bytes.
  * ``from_examples``: ``examples`` (serialized tf.Example [None]) -> the same outputs plus
    ``positive_probability`` for two classes; used by the Evaluator (TFMA).
The class names travel in the model as the asset ``labels.txt``.
"""

from __future__ import annotations

import os
import tempfile

import keras
import tensorflow as tf

from contract import features
from contract.interface import (
    CLASS_INDEX,
    CLASS_NAME,
    EXAMPLES_INPUT,
    EXAMPLES_SIGNATURE,
    IMAGES_INPUT,
    LABELS_ASSET,
    POSITIVE_PROBABILITY,
    PROBABILITIES,
    SERVING_SIGNATURE,
)
from contract.labels import format_labels
from trainer.data import feature_spec
from trainer.images import decode_batch


def _label_table(labels_path: str) -> tf.lookup.StaticHashTable:
    """class index (int64) -> class name, read from the labels asset's whole lines."""
    return tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            labels_path, key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE),
        default_value="")


def probabilities_of(logits: tf.Tensor) -> tf.Tensor:
    """The class probabilities [N, classes] of the model's logits: a sigmoid's two classes
    for one logit (the binary head), else a softmax.

    Args:
      logits: the model's output, float [N, 1] or [N, classes].

    Returns:
      float [N, classes], each row summing to 1.
    """
    if logits.shape[-1] == 1:
        positive = tf.sigmoid(logits)[:, 0]
        return tf.stack([1.0 - positive, positive], axis=1)
    return tf.nn.softmax(logits, axis=-1)


def export_model(model: keras.Model, class_names: list[str], image_size: int,
                 export_dir: str) -> str:
    """Writes the SavedModel (both signatures, the labels asset) to export_dir.

    keras.export.ExportArchive tracks every variable the signatures use, so the SavedModel's
    saver restores them when TF Serving loads it in a session; a Keras 3 model saved as an
    attribute of a tf.Module is not (tensorflow/serving#2226, keras-team/keras#20095).

    Args:
      model: the trained Keras model (float images [N, size, size, 3] in [0, 255] -> logits).
      class_names: the class names by index.
      image_size: the square size images are resized to.
      export_dir: where to write; created.

    Returns:
      export_dir.
    """
    binary = model.output_shape[-1] == 1
    with tempfile.TemporaryDirectory() as tmp:
        labels_path = os.path.join(tmp, LABELS_ASSET)
        with open(labels_path, "w", encoding="utf-8") as f:
            f.write(format_labels(class_names))
        table = _label_table(labels_path)

        def predict(encoded: tf.Tensor) -> dict[str, tf.Tensor]:
            """Encoded images (string [N]) -> probabilities, class index and class name."""
            probabilities = probabilities_of(
                model(decode_batch(encoded, image_size), training=False))
            index = tf.argmax(probabilities, axis=1)
            return {PROBABILITIES: probabilities, CLASS_INDEX: index,
                    CLASS_NAME: table.lookup(index)}

        def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
            """The serving_default signature: encoded images -> predict's outputs."""
            return predict(images)

        def serve_examples(examples: tf.Tensor) -> dict[str, tf.Tensor]:
            """from_examples: serialized tf.Examples -> predict's outputs + positive_probability."""
            parsed = tf.io.parse_example(examples, feature_spec(features.IMAGE_KEY))
            outputs = predict(parsed[features.IMAGE_KEY])
            if binary:
                outputs[POSITIVE_PROBABILITY] = outputs[PROBABILITIES][:, 1]
            return outputs

        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.track(table)
        archive.add_endpoint(SERVING_SIGNATURE, serve_images,
                             [tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
        archive.add_endpoint(EXAMPLES_SIGNATURE, serve_examples,
                             [tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
        archive.write_out(export_dir, verbose=False)
    return export_dir
