"""Ingestion's errors and the short human reasons it gives for a skipped file."""

from __future__ import annotations

import tensorflow as tf


class IngestError(ValueError):
    """The image folder cannot be converted (missing, wrong layout, too few classes)."""


class Skip(Exception):
    """A file is skipped; the message is the one-line human reason."""


def os_reason(e: OSError) -> str:
    """A short human text for an OSError ("permission denied"), without the path.

    Args:
      e: the error.

    Returns:
      Its strerror in lower case (or the exception's type name).
    """
    return (e.strerror or type(e).__name__).lower()


_OP_REASONS = {tf.errors.NotFoundError: "not found",
               tf.errors.PermissionDeniedError: "permission denied"}


def op_reason(e: tf.errors.OpError) -> str:
    """A short human text for a TensorFlow file system error, without TF's op text.

    Args:
      e: the error.

    Returns:
      "not found", "permission denied" or "read error".
    """
    return next((text for kind, text in _OP_REASONS.items() if isinstance(e, kind)), "read error")


def reason_key(reason: str) -> str:
    """A skip reason's count key in the report: its text before ":" or " (".

    Args:
      reason: a skip reason, e.g. "too large: 23000x23000 pixels (limit 40000000)".

    Returns:
      The key, e.g. "too large".
    """
    return reason.split(":")[0].split(" (")[0]
