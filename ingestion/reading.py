"""Reading one file safely: only regular files are opened, and reads are bounded."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator

import tensorflow as tf

from ingestion.names import is_remote
from ingestion.reasons import Skip, op_reason, os_reason


def _too_big(size: int, max_bytes: int) -> Skip:
    return Skip(f"file too large: {size} bytes (limit {max_bytes})")


def _read_chunks(path: str | bytes, max_bytes: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The bytes of a regular file, in chunks, at most max_bytes in all (raises Skip).

    Only regular files are opened (never a FIFO, socket or device, which could block or never
    end): local files are checked with stat before opening, opened non-blocking and checked
    again with fstat on the open descriptor. A file longer than max_bytes is refused before
    reading when its size says so, and reading stops at max_bytes + 1 bytes when it grows.
    """
    if is_remote(path):
        try:
            size = tf.io.gfile.stat(path).length
            if size > max_bytes:
                raise _too_big(size, max_bytes)
            with tf.io.gfile.GFile(path, "rb") as f:
                read = 0
                while piece := f.read(chunk):
                    read += len(piece)
                    if read > max_bytes:
                        raise _too_big(read, max_bytes)
                    yield piece
        except tf.errors.OpError as e:
            raise Skip(f"unreadable: {op_reason(e)}") from None
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise Skip("broken symlink" if os.path.islink(path) else "unreadable: not found") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Skip("broken symlink (it loops)") from None
        raise Skip(f"unreadable: {os_reason(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise Skip("not a regular file")
    if st.st_size > max_bytes:
        raise _too_big(st.st_size, max_bytes)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise Skip(f"unreadable: {os_reason(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced since the stat above
            raise Skip("not a regular file")
        read = 0
        while True:
            try:
                piece = os.read(fd, min(chunk, max_bytes + 1 - read))
            except OSError as e:
                raise Skip(f"unreadable: {os_reason(e)}") from None
            if not piece:
                return
            read += len(piece)
            if read > max_bytes:
                raise _too_big(read, max_bytes)
            yield piece
    finally:
        os.close(fd)


def read_source(path: str | bytes, max_bytes: int) -> tuple[bytes | None, str | None]:
    """Reads a whole regular file of at most max_bytes: (data, None) or (None, skip reason).

    Args:
      path: a local path (str or bytes) or a tf.io.gfile URL.
      max_bytes: the largest file read; a larger one is refused, mostly without reading it.

    Returns:
      (the bytes, None), or (None, a one-line human reason such as "not a regular file",
      "broken symlink" or "file too large: 70000000 bytes (limit 67108864)").
    """
    try:
        return b"".join(_read_chunks(path, max_bytes)), None
    except Skip as e:
        return None, str(e)


def digest_source(path: str | bytes, max_bytes: int) -> str:
    """The SHA-256 of a file read as read_source would (streamed), or its skip reason.

    Args:
      path: a local path (str or bytes) or a tf.io.gfile URL.
      max_bytes: the largest file read.

    Returns:
      The hex digest, or "skipped: <reason>".
    """
    h = hashlib.sha256()
    try:
        for piece in _read_chunks(path, max_bytes):
            h.update(piece)
    except Skip as e:
        return f"skipped: {e}"
    return h.hexdigest()

