"""The one function that turns encoded image bytes into a model-ready image tensor.

Used by the training input (`trainer.data`) and by the serving signatures (`trainer.export`),
so training and serving decode and resize identically. Rescaling to MobileNetV2's [-1, 1] and
augmentation live in the Keras model itself.
"""

from __future__ import annotations

import tensorflow as tf


def decode_and_resize(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes one JPEG/PNG/GIF/BMP (scalar string) to float32 [size, size, 3] in [0, 255].

    Grayscale and RGBA become RGB; an animated GIF contributes its first frame. The image is
    resized bilinearly without cropping, as `keras.utils.image_dataset_from_directory` does.

    Args:
      encoded: a scalar string tensor of encoded image bytes.
      image_size: the side the image is resized to, in pixels.

    Returns:
      A float32 tensor [image_size, image_size, 3] with values in [0, 255].
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    return tf.cast(image, tf.float32)


def decode_batch(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes a batch of encoded images (string [N]) to float32 [N, size, size, 3].

    Args:
      encoded: a string tensor [N] of encoded image bytes.
      image_size: the side each image is resized to, in pixels.

    Returns:
      A float32 tensor [N, image_size, image_size, 3] with values in [0, 255].
    """
    return tf.map_fn(
        lambda e: decode_and_resize(e, image_size),
        encoded,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )
