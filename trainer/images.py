"""The one function that turns encoded image bytes into a model-ready image tensor.

Used by the training input (`trainer.data`) and by the serving signatures (`trainer.export`),
so training and serving decode and resize identically. Rescaling to MobileNetV2's [-1, 1] and
augmentation live in the Keras model itself.
"""

from __future__ import annotations

import tensorflow as tf

from contract.features import IMAGE_FORMATS, IMAGE_MAGIC
from contract.image_header import DEFAULT_MAX_IMAGE_PIXELS


def _uint(data: tf.Tensor, at: int, size: int, big_endian: bool) -> tf.Tensor:
    """The unsigned integer of `size` bytes at offset `at` of a scalar string, as int64."""
    raw = tf.io.decode_raw(tf.strings.substr(data, at, size), tf.uint8)
    raw = tf.reverse(raw, [0]) if big_endian else raw
    return tf.reduce_sum(tf.cast(raw, tf.int64) * tf.constant([256**i for i in range(size)],
                                                               tf.int64))


def _gif_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """The pixels decoding a GIF allocates, contract.image_header's rule walked in the graph:
    the larger of the logical screen and the sum of every frame (giflib reads every frame,
    even when only the first is kept)."""
    data = tf.io.decode_raw(encoded, tf.uint8)
    n = tf.size(data, out_type=tf.int64)
    padded = tf.concat([tf.cast(data, tf.int64), tf.zeros([1], tf.int64)], 0)

    def byte(at: tf.Tensor) -> tf.Tensor:  # 0 past the end
        return tf.gather(padded, tf.minimum(tf.cast(at, tf.int64), n))

    def u16(at: tf.Tensor) -> tf.Tensor:
        return byte(at) + 256 * byte(at + 1)

    def color_table(packed: tf.Tensor) -> tf.Tensor:
        return tf.where(packed >= 128, 3 * tf.bitwise.left_shift(
            tf.constant(2, tf.int64), tf.bitwise.bitwise_and(packed, 7)), 0)

    def walk(at, pixels, in_sub_blocks, done):
        value = byte(at)
        # In an image's or extension's data: a sub-block's size byte; 0 ends the data.
        sub_at = at + 1 + value
        # Else a block introducer: an image descriptor, an extension, or the end.
        image, extension = tf.equal(value, 0x2C), tf.equal(value, 0x21)
        whole = at + 10 <= n
        frame = tf.where(image & whole, u16(at + 5) * u16(at + 7), 0)
        next_at = tf.where(image, at + 10 + color_table(byte(at + 9)) + 1, at + 2)
        ends = ~(image | extension) | (image & ~whole)
        return (tf.where(in_sub_blocks, sub_at, next_at),
                tf.where(in_sub_blocks, pixels, pixels + frame),
                tf.where(in_sub_blocks, value > 0, ~ends),
                ~in_sub_blocks & ends)

    start = 13 + color_table(byte(10))
    _, pixels, _, _ = tf.while_loop(
        lambda at, pixels, in_sub_blocks, done: ~done & (at < n), walk,
        (start, tf.constant(0, tf.int64), tf.constant(False), tf.constant(False)),
        parallel_iterations=1)
    return tf.maximum(u16(6) * u16(8), pixels)


def declared_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """The pixels decoding would allocate, read in the graph from the header without decoding,
    as contract.image_header reads them in Python.

    JPEG: its frame header (tf.image.extract_jpeg_shape); PNG: IHDR; GIF: the larger of the
    logical screen and all frames; BMP: the info header. Files too short for their header give
    0, and fail to decode.

    Args:
      encoded: a scalar string tensor of encoded image bytes.

    Returns:
      An int64 scalar; -1 for bytes that are none of contract.features.IMAGE_FORMATS (such as
      the WebP and JPEG XL tf.io.decode_image would also read, without a pixel limit here).
    """
    # The first 26 bytes hold every PNG and BMP size field; padded so that the offsets stay in
    # range for short inputs, without copying the rest of the image.
    padded = tf.strings.substr(encoded, 0, 26) + tf.constant(b"\0" * 26)

    def png() -> tf.Tensor:
        return _uint(padded, 16, 4, True) * _uint(padded, 20, 4, True)

    def jpeg() -> tf.Tensor:
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
        return shape[0] * shape[1]

    def bmp() -> tf.Tensor:
        def side(value: tf.Tensor) -> tf.Tensor:  # signed (a negative height: top-down rows)
            return tf.where(value >= 2**31, 2**32 - value, value)
        return side(_uint(padded, 18, 4, False)) * side(_uint(padded, 22, 4, False))

    readers = {"jpeg": jpeg, "png": png, "gif": lambda: _gif_pixels(encoded), "bmp": bmp}
    return tf.case([(tf.equal(tf.strings.substr(padded, 0, len(magic)), magic), readers[fmt])
                    for magic, fmt in IMAGE_MAGIC],
                   default=lambda: tf.constant(-1, tf.int64), exclusive=False)


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
    known = tf.debugging.assert_non_negative(
        pixels, message=f"not an image: expected {IMAGE_FORMATS}")
    within = tf.debugging.assert_less_equal(
        pixels, tf.constant(max_pixels, tf.int64),
        message=f"image too large: more than {max_pixels} pixels, refused before decoding")
    with tf.control_dependencies([known, within]):
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


def device_pixels(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """A batch of encoded images as a phone's camera or gallery gives them to the on-device
    model: decode_batch's images rounded to uint8 RGB.

    Args:
      encoded: a string tensor [N] of encoded image bytes.
      image_size: the side each image is resized to, in pixels.

    Returns:
      A uint8 tensor [N, image_size, image_size, 3].
    """
    return tf.saturate_cast(tf.round(decode_batch(encoded, image_size)), tf.uint8)
