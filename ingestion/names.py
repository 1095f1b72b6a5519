"""Names as the report, the tf.Example and errors show them, and local vs tf.io.gfile paths."""

from __future__ import annotations

import os


def printable(name: str | bytes) -> str:
    """A file name (or path) as printable UTF-8 text, for the report, the tf.Example and errors.

    Printable UTF-8 names are returned unchanged; a byte that is not UTF-8 becomes ``\\xNN``
    (so b"caf\\xe9.jpg" -> "caf\\\\xe9.jpg") and a control character its escape (a line break
    becomes ``\\n``).

    Args:
      name: a name as os.listdir returns it (undecodable bytes as surrogates) or as bytes.

    Returns:
      The printable text.
    """
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def is_remote(path: str | bytes) -> bool:
    """Whether a path is a tf.io.gfile URL (gs://, file://...) rather than a local path.

    Args:
      path: a path or URL.

    Returns:
      True for a URL.
    """
    return isinstance(path, str) and "://" in path
