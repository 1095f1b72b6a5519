"""The report's figures as PNG bytes: learning curves, confusion matrix, reliability diagram.

Long class names are wrapped and the figures grow with the number of classes, so ten classes
named like "golden retriever" stay readable.
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any

import numpy as np

from components.report import history as hist

_DPI = 90


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def wrap(name: str, width: int = 16) -> str:
    """A class name broken into lines of about `width` characters (at spaces when it can).

    Args:
      name: the class name.
      width: the line length.

    Returns:
      The name with line breaks.
    """
    return "\n".join(textwrap.wrap(name, width, break_long_words=True)) or name


def learning_curves(history: dict[str, Any]) -> bytes:
    """Accuracy and loss per epoch, training and validation, both phases on one axis, with the
    fine-tuning start and each phase's kept epoch marked.

    Args:
      history: the Trainer's history.json.

    Returns:
      The PNG.
    """
    plt = _pyplot()
    rows = hist.phase_rows(history)
    fig, axes = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = hist.series(history, prefix + metric)
            ax.plot(range(1, len(values) + 1), values, "o-", ms=4, label=f"{label} {metric}")
        validation = hist.series(history, f"val_{metric}")
        for row in rows:
            if row["phase"] == "phase2":
                ax.axvline(row["first_epoch"] - 0.5, color="gray", linestyle="--",
                           label="fine-tuning starts" if ax is axes[0] else None)
            kept = row["kept_epoch"]
            if kept is None or kept > len(validation) or math.isnan(validation[kept - 1]):
                continue
            final = row["exported"]
            ax.plot(kept, validation[kept - 1], marker="*" if final else "D",
                    ms=16 if final else 9, color="tab:red" if final else "tab:purple",
                    linestyle="none", zorder=5,
                    label=((f"kept epoch {kept} (exported)" if final
                            else f"{row['phase']} kept epoch {kept}")
                           if ax is axes[0] else None))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    axes[1].set_xlabel("epoch")
    axes[1].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fig.tight_layout()
    return _png(fig)


def confusion_matrix(matrix: list[list[int]], classes: list[str], title: str) -> bytes:
    """The confusion counts as a grid, true class by row, shaded by the row's share.

    Args:
      matrix: counts [true][predicted].
      classes: the class names by index.
      title: the figure's title.

    Returns:
      The PNG.
    """
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.75 * len(classes) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = [wrap(c) for c in classes]
    ax.set_xticks(range(len(classes)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(int(n)), ha="center", va="center", fontsize=9,
                color="white" if shares[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def reliability_diagram(numbers: dict[str, Any]) -> bytes:
    """Accuracy against confidence per bin (a calibrated model follows the diagonal), and how
    many test images fall in each bin.

    Args:
      numbers: predictions.reliability's result.

    Returns:
      The PNG.
    """
    plt = _pyplot()
    edges = np.asarray(numbers["edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    accuracy = [np.nan if a is None else a for a in numbers["accuracy"]]
    top.bar(centers, accuracy, width=width * 0.9, color="tab:blue", alpha=0.8,
            label="accuracy in bin")
    confidence = [np.nan if c is None else c for c in numbers["confidence"]]
    top.plot(centers, confidence, "o", color="tab:orange", label="mean confidence in bin")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy")
    top.set_title(f"expected calibration error {numbers['ece']:.3f}", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(centers, numbers["count"], width=width * 0.9, color="gray")
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    return _png(fig)
