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

from trainer import features as F
from trainer.images import decode_batch
from trainer.interface import (
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


class ServingModule(tf.Module):
    """The exported object: the Keras model, the label table, and the two signatures."""

    def __init__(self, model: keras.Model, class_names: list[str], image_size: int,
                 labels_path: str):
        super().__init__()
        self.model = model
        # Keras 3 keeps seed-generator states (augmentation, dropout) outside the layers'
        # weights; tracking every model variable makes them reachable for tf.saved_model.
        self.model_variables = list(model.variables)
        self.image_size = image_size
        self.binary = model.output_shape[-1] == 1
        self.labels = tf.saved_model.Asset(labels_path)
        self.label_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.labels, key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
                value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE),
            default_value="")
        self.num_classes = len(class_names)

    def _predict(self, encoded: tf.Tensor) -> dict[str, tf.Tensor]:
        images = decode_batch(encoded, self.image_size)
        logits = self.model(images, training=False)
        if self.binary:
            positive = tf.sigmoid(logits)[:, 0]
            probabilities = tf.stack([1.0 - positive, positive], axis=1)
        else:
            probabilities = tf.nn.softmax(logits, axis=-1)
        index = tf.argmax(probabilities, axis=1)
        return {PROBABILITIES: probabilities, CLASS_INDEX: index,
                CLASS_NAME: self.label_table.lookup(index)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(
            examples, {F.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        outputs = self._predict(parsed[F.IMAGE_KEY])
        if self.binary:
            outputs[POSITIVE_PROBABILITY] = outputs[PROBABILITIES][:, 1]
        return outputs


def export_model(model: keras.Model, class_names: list[str], image_size: int,
                 export_dir: str) -> str:
    """Writes the SavedModel (both signatures, labels asset) to export_dir."""
    with tempfile.TemporaryDirectory() as tmp:
        labels_path = os.path.join(tmp, LABELS_ASSET)
        with open(labels_path, "w") as f:
            f.write("\n".join(class_names) + "\n")
        module = ServingModule(model, class_names, image_size, labels_path)
        tf.saved_model.save(module, export_dir, signatures={
            SERVING_SIGNATURE: module.serve_images.get_concrete_function(),
            EXAMPLES_SIGNATURE: module.serve_examples.get_concrete_function(),
        })
    return export_dir
