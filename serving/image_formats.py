"""Checking, before sending, that bytes are an image the model decodes."""

from __future__ import annotations

from contract.features import IMAGE_FORMATS, image_format
from serving.errors import InvalidArgument


def check_image(data: bytes, name: str) -> None:
    """Raises InvalidArgument naming `name` unless data starts like a JPEG/PNG/GIF/BMP.

    Args:
      data: the encoded image.
      name: what the error calls the image (e.g. its file).

    Raises:
      InvalidArgument: data does not start with a JPEG, PNG, GIF or BMP signature.
    """
    if image_format(data) is None:
        raise InvalidArgument(f"{name} is not a {IMAGE_FORMATS} image")
