"""Checking, before sending, that bytes are an image the model decodes."""

from __future__ import annotations

from contract.features import IMAGE_FORMATS, image_format
from serving.errors import InvalidArgument


def check_image(data: bytes, name: str) -> None:
    """Raises InvalidArgument naming `name` unless data starts like a JPEG/PNG/GIF/BMP."""
    if image_format(data) is None:
        raise InvalidArgument(f"{name} is not a {IMAGE_FORMATS} image")
