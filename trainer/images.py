"""The one function that turns encoded image bytes into a model-ready image tensor.

Used by the training input (`trainer.data`) and by the serving signatures (`trainer.export`),
so training and serving decode and resize identically. Rescaling to MobileNetV2's [-1, 1] and
augmentation live in the Keras model itself.
"""

from __future__ import annotations

import tensorflow as tf

from contract.image_header import DEFAULT_MAX_IMAGE_PIXELS


def _uint(data: tf.Tensor, at: int, size: int, big_endian: bool) -> tf.Tensor:
    """The unsigned integer of `size` bytes at offset `at` of a scalar string, as int64."""
    raw = tf.io.decode_raw(tf.strings.substr(data, at, size), tf.uint8)
    raw = tf.reverse(raw, [0]) if big_endian else raw
    return tf.reduce_sum(tf.cast(raw, tf.int64) * tf.constant([256**i for i in range(size)],
                                                               tf.int64))


def declared_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """Width x height as the image's header declares it, read in the graph without decoding.

    JPEG: its frame header (tf.image.extract_jpeg_shape); PNG: IHDR; GIF: the logical screen;
    BMP: the info header. Other bytes give 0 (decode_image rejects them anyway). Files too
    short for their header give 0 too, and fail to decode.

    Args:
      encoded: a scalar string tensor of encoded image bytes.

    Returns:
      An int64 scalar.
    """
    # The first 26 bytes hold every size field read below; padded so that the offsets stay in
    # range for short inputs, without copying the rest of the image.
    padded = tf.strings.substr(encoded, 0, 26) + tf.constant(b"\0" * 26)
    head = tf.strings.substr(padded, 0, 8)

    def png() -> tf.Tensor:
        return _uint(padded, 16, 4, True) * _uint(padded, 20, 4, True)

    def jpeg() -> tf.Tensor:
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
        return shape[0] * shape[1]

    def gif() -> tf.Tensor:
        return _uint(padded, 6, 2, False) * _uint(padded, 8, 2, False)

    def bmp() -> tf.Tensor:
        height = _uint(padded, 22, 4, False)
        height = tf.where(height >= 2**31, 2**32 - height, height)  # negative: top-down rows
        return _uint(padded, 18, 4, False) * height

    return tf.case([
        (tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff"), jpeg),
        (tf.equal(head, b"\x89PNG\r\n\x1a\n"), png),
        (tf.equal(tf.strings.substr(head, 0, 3), b"GIF"), gif),
        (tf.equal(tf.strings.substr(head, 0, 2), b"BM"), bmp),
    ], default=lambda: tf.constant(0, tf.int64), exclusive=False)


def decode_and_resize(encoded: tf.Tensor, image_size: int,
                      max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tf.Tensor:
    """Decodes one JPEG/PNG/GIF/BMP (scalar string) to float32 [size, size, 3] in [0, 255].

    Grayscale and RGBA become RGB; an animated GIF contributes its first frame. The image is
    resized bilinearly without cropping, as `keras.utils.image_dataset_from_directory` does.
    An image whose header declares more than max_pixels is refused before decoding, so that
    a small file declaring a huge image (a decompression bomb) cannot exhaust the memory of
    TF Serving, which runs this in the served graph.

    Args:
      encoded: a scalar string tensor of encoded image bytes.
      image_size: the side the image is resized to, in pixels.
      max_pixels: the most pixels (width x height) an image may declare.

    Returns:
      A float32 tensor [image_size, image_size, 3] with values in [0, 255].

    Raises:
      tf.errors.InvalidArgumentError: (when run) the image declares more than max_pixels;
        TF Serving answers 400 / INVALID_ARGUMENT with the message.
    """
    pixels = declared_pixels(encoded)
    within = tf.debugging.assert_less_equal(
        pixels, tf.constant(max_pixels, tf.int64),
        message=f"image too large: more than {max_pixels} pixels, refused before decoding")
    with tf.control_dependencies([within]):
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
