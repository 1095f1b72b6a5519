"""Image headers: the size decoding would produce, read before decoding (JPEG/PNG/GIF/BMP).

A small file can declare a huge image (a 23000x23000 PNG compresses to 1.5 MB or far less and
decodes to 1.6 GB): ingestion reads the header first and skips an image above a pixel limit
without decoding it. The served graph applies the same rule to every request before it decodes
(trainer/images.py, `declared_pixels`: the same fields read with TF ops, as TF Serving runs
it; tests/test_export.py checks the two agree, GIF frames included).
"""

from __future__ import annotations

# The one default of the pixel limit (ingestion's --max-image-pixels, the served graph's limit).
# Decoding allocates 3 bytes a pixel, so 40M pixels (a 7300x5500 photo) is about 120 MB.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


def _u16be(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "big")


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker, walking the marker segments."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:  # stray bytes between segments: look for the next marker
            at = data.find(b"\xff", at)
            if at < 0:
                return None
            continue
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            if at + 9 > len(data):
                return None
            return _u16be(data, at + 7), _u16be(data, at + 5)
        at += 2 + _u16be(data, at + 2)
    return None


def _gif_pixels(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, frames, pixels of all frames) of a GIF, walking its blocks.

    The decoder reads every frame even when only the first is kept, so all of them count.
    A truncated or malformed file stops the walk (the decoder then refuses it).
    """
    if len(data) < 13:
        return None
    width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    frames = pixels = 0

    def skip_sub_blocks(at: int) -> int:
        while at < len(data) and data[at]:
            at += 1 + data[at]
        return at + 1

    while at < len(data):
        kind = data[at]
        if kind == 0x2C:  # image descriptor
            if at + 10 > len(data):
                break
            frames += 1
            pixels += (int.from_bytes(data[at + 5:at + 7], "little")
                       * int.from_bytes(data[at + 7:at + 9], "little"))
            packed = data[at + 9]
            at += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
            at = skip_sub_blocks(at + 1)  # LZW minimum code size, then the image data
        elif kind == 0x21:  # extension: label, then sub-blocks
            at = skip_sub_blocks(at + 2)
        else:  # trailer (0x3B) or garbage
            break
    return width, height, frames, pixels


def image_size(data: bytes, fmt: str) -> tuple[int, int, int] | None:
    """(width, height, pixels decoding allocates) from an image's header, without decoding.

    Args:
      data: the file's bytes.
      fmt: its format, as contract.features.image_format names it.

    Returns:
      The size, or None when the header holds none (the file is then undecodable). For a GIF
      the pixels are the larger of the screen and the sum of all frames.
    """
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return width, height, width * height
    if fmt == "jpeg":
        size = _jpeg_size(data)
        return None if size is None else (*size, size[0] * size[1])
    if fmt == "bmp":
        if len(data) < 26:
            return None
        width = abs(int.from_bytes(data[18:22], "little", signed=True))
        height = abs(int.from_bytes(data[22:26], "little", signed=True))
        return width, height, width * height
    if fmt == "gif":
        gif = _gif_pixels(data)
        if gif is None:
            return None
        width, height, _, pixels = gif
        return width, height, max(width * height, pixels)
    return None


def pixel_limit_reason(size: tuple[int, int, int], max_pixels: int) -> str | None:
    """Why an image of a given header size is refused before decoding, if it is.

    Args:
      size: (width, height, pixels) as image_size returns it.
      max_pixels: the most pixels decoding may produce (width x height; all frames of a GIF).

    Returns:
      A one-line reason such as "too large: 23000x23000 pixels (limit 40000000)", or None
      within the limit.
    """
    width, height, pixels = size
    if pixels <= max_pixels:
        return None
    if pixels > width * height:
        return f"too large: {pixels} pixels in all GIF frames (limit {max_pixels})"
    return f"too large: {width}x{height} pixels (limit {max_pixels})"
