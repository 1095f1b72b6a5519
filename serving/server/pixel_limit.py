"""The local server's pixel limit: a request whose image header declares more pixels than the
limit is refused with INVALID_ARGUMENT before the model decodes it.

The served signatures decode inside the graph (tf.io.decode_image has no size limit for PNG,
GIF or BMP), so a 1.5 MB PNG declaring 23000x23000 pixels would allocate 1.6 GB per image.
Images come as the `images` strings of serving_default or inside the tf.Examples that
from_examples parses; both are checked here, from the header only (contract/image_header.py).
TF Serving itself has no such check (the README, "Serving").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2

from contract.features import IMAGE_KEY, image_format
from contract.image_header import over_pixel_limit
from serving.errors import InvalidArgument


def _strings(value: Any) -> Iterator[bytes]:
    """The bytes values inside an input (bytes, nested lists, object arrays), iteratively."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            yield item
        elif isinstance(item, np.ndarray):
            if item.dtype == object:
                stack.extend(item.ravel()[::-1])
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))


def _images(data: bytes) -> Iterator[bytes]:
    """The encoded images in one string: itself, or the image feature of a tf.Example."""
    if image_format(data):
        yield data
        return
    try:
        example = example_pb2.Example.FromString(data)
    except (DecodeError, RuntimeWarning):
        return  # not an Example: the signature refuses it as TF Serving would
    feature = example.features.feature.get(IMAGE_KEY)
    if feature is not None:
        yield from feature.bytes_list.value


def check_pixel_limit(inputs: Mapping[str, Any], max_pixels: int) -> None:
    """Refuses a request holding an image whose header declares more than max_pixels.

    Args:
      inputs: the request's values by input alias (arrays or nested lists; bytes for strings).
      max_pixels: the most pixels one image may declare (width x height; all GIF frames).

    Raises:
      InvalidArgument: naming the input, the value's index and the image's size.
    """
    for alias in sorted(inputs):
        for index, data in enumerate(_strings(inputs[alias])):
            for image in _images(data):
                reason = over_pixel_limit(image, max_pixels)
                if reason:
                    raise InvalidArgument(
                        f"{alias}[{index}]: image {reason}, refused before decoding "
                        "(the server's --max-image-pixels)")
