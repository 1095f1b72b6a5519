"""The labels file format: one class name per line, in class-index order, UTF-8.

Written beside the converted splits by ingestion and into the model as assets/labels.txt;
read by the model's lookup table (whole lines), the report and the Kubeflow runner."""

from __future__ import annotations

from collections.abc import Sequence

LABELS_FILE = "labels.txt"


def format_labels(class_names: Sequence[str]) -> str:
    """The file's text for class names in index order.

    Args:
      class_names: the class names; none may be empty or hold a line break.

    Returns:
      One name per line, newline-terminated.

    Raises:
      ValueError: a name is empty or holds a line break.
    """
    bad = [n for n in class_names if not n or "\n" in n or "\r" in n]
    if bad:
        raise ValueError(f"class names must be non-empty single lines: {bad!r}")
    return "".join(f"{name}\n" for name in class_names)


def parse_labels(text: str) -> list[str]:
    """The class names of a labels file's text: whole lines, so names may hold spaces.

    Args:
      text: the file's content.

    Returns:
      The class names in index order (a trailing newline adds no class).
    """
    return text.splitlines()
