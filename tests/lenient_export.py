"""The export TF Serving rejects, kept to prove the strict loaders reject it too.

A Keras 3 model held by a tf.Module and saved with tf.saved_model.save: TF2's object loader
runs it, but TF Serving's session loader cannot find its variables ("Could not find variable
...", tensorflow/serving#2226, keras-team/keras#20095). The project's exports went this way
before they used keras.export.ExportArchive.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from contract.interface import CLASS_INDEX, IMAGES_INPUT, PROBABILITIES, SERVING_SIGNATURE
from trainer.images import decode_batch


class _Holder(tf.Module):
    def __init__(self, model: keras.Model, image_size: int):
        super().__init__()
        self.model = model
        self.model_variables = list(model.variables)
        self.image_size = image_size

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = self.model(decode_batch(images, self.image_size), training=False)
        positive = tf.sigmoid(logits)[:, 0]
        probabilities = tf.stack([1.0 - positive, positive], axis=1)
        return {PROBABILITIES: probabilities, CLASS_INDEX: tf.argmax(probabilities, axis=1)}


def export_lenient_only(model: keras.Model, image_size: int, export_dir: str) -> str:
    """Saves a two-class model the way TF Serving cannot load; returns export_dir."""
    holder = _Holder(model, image_size)
    tf.saved_model.save(holder, export_dir,
                        signatures={SERVING_SIGNATURE: holder.serve.get_concrete_function()})
    return export_dir
