"""The run report as a TFX component: pictures and an HTML page a person can read.

It serves the trained model on the raw test images, exactly as TF Serving would, and draws
  * ``samples.png``: a grid of test photos with true and predicted class (wrong ones in red),
  * ``learning_curves.png``: accuracy and loss of both training phases,
  * ``confusion_matrix.png``: test-split counts per (true, predicted) class,
and writes ``report.json`` (the numbers) and ``index.html`` (everything on one page).

No `from __future__ import annotations` here: TFX reads the component signature's annotations.
"""

import base64
import html
import json
import os

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.artifact import Artifact
from tfx.types.standard_artifacts import Examples, InfraBlessing, Model, ModelBlessing, ModelRun
from tfx.utils import path_utils

from components.serving_check import blessing_entry, describe
from contract import features
from contract.artifacts import HISTORY_FILE
from contract.interface import LABELS_ASSET, PROBABILITIES, SERVING_SIGNATURE
from contract.labels import parse_labels
from trainer.data import feature_spec, record_dataset

REPORT_HTML = "index.html"
REPORT_JSON = "report.json"
PICTURES = ("samples.png", "learning_curves.png", "confusion_matrix.png")
_PREDICT_BATCH = 64


class RunReport(Artifact):
    """A folder with the run's pictures, numbers and HTML page."""

    # Kubeflow needs "<module>.<Class>" (one dot) and imports the class by it in the pods;
    # components/__init__.py resolves the name.
    TYPE_NAME = "components.RunReport"


def read_split(examples_uri: str, split: str) -> tuple[list[bytes], np.ndarray, list[str]]:
    """Encoded images, labels and paths of one split of an Examples artifact.

    Args:
      examples_uri: the Examples artifact's uri.
      split: the split name, e.g. "test".

    Returns:
      The encoded images, the labels (int64 [N]) and the source paths, in record order.
    """
    spec = feature_spec(features.IMAGE_KEY, features.LABEL_KEY, features.PATH_KEY)
    images, labels, paths = [], [], []
    for record in record_dataset(os.path.join(examples_uri, f"Split-{split}", "*")):
        parsed = tf.io.parse_single_example(record, spec)
        images.append(parsed[features.IMAGE_KEY].numpy())
        labels.append(int(parsed[features.LABEL_KEY]))
        paths.append(parsed[features.PATH_KEY].numpy().decode())
    return images, np.array(labels, dtype=np.int64), paths


def predict(model_dir: str, images: list[bytes]) -> tuple[np.ndarray, list[str]]:
    """Probabilities [N, classes] from the serving signature, and the class names.

    Args:
      model_dir: the SavedModel directory (serving signature and labels asset).
      images: encoded images, sent in batches of 64.

    Returns:
      The probabilities (float32 [N, classes]) and the class names by index.
    """
    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures[SERVING_SIGNATURE]
    chunks = [serve(images=tf.constant(images[i:i + _PREDICT_BATCH]))[PROBABILITIES].numpy()
              for i in range(0, len(images), _PREDICT_BATCH)]
    with tf.io.gfile.GFile(os.path.join(model_dir, "assets", LABELS_ASSET)) as f:
        classes = parse_labels(f.read())
    return np.concatenate(chunks), classes


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class].

    Args:
      labels: the true class indices, int [N].
      predicted: the predicted class indices, int [N].
      num_classes: the number of classes.

    Returns:
      The counts, int64 [num_classes, num_classes].
    """
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_samples(path: str, images: list[bytes], labels: np.ndarray, probabilities: np.ndarray,
                 classes: list[str], count: int) -> None:
    """A grid of up to `count` test photos titled 'true -> predicted (p)'.

    Args:
      path: the PNG file to write.
      images: encoded images.
      labels: their true class indices, int [N].
      probabilities: their predicted probabilities, float [N, classes].
      classes: the class names by index.
      count: the most photos to draw (four per row).
    """
    plt = _figure()
    count = min(count, len(images))
    cols = min(4, count)
    rows = max(1, -(-count // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, probs in zip(axes.flat, images, labels, probabilities, strict=False):
        pred = int(np.argmax(probs))
        ax.imshow(tf.io.decode_image(image, channels=3, expand_animations=False).numpy())
        ax.set_title(f"{classes[label]} -> {classes[pred]} ({probs[pred]:.2f})", fontsize=9,
                     color="tab:green" if pred == label else "tab:red")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def draw_learning_curves(path: str, history: dict) -> None:
    """Accuracy and loss per epoch, train and validation, both phases.

    Args:
      path: the PNG file to write.
      history: the Trainer's history: {"phase1", "phase2" (if it ran): {"history": {metric:
        [value per epoch]}}}.
    """
    plt = _figure()
    phases = [history[p]["history"] for p in ("phase1", "phase2") if p in history]
    series = {k: sum((h.get(k, []) for h in phases), []) for k in
              ("accuracy", "val_accuracy", "loss", "val_loss")}
    epochs = np.arange(1, len(series["accuracy"]) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for ax, name in ((top, "accuracy"), (bottom, "loss")):
        ax.plot(epochs, series[name], "o-", label=f"training {name}")
        ax.plot(epochs, series[f"val_{name}"], "o-", label=f"validation {name}")
        if len(phases) == 2:
            ax.axvline(len(phases[0]["accuracy"]) + 0.5, color="gray", linestyle="--",
                       label="start fine-tuning")
        ax.set_ylabel(name)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def draw_confusion_matrix(path: str, matrix: np.ndarray, classes: list[str]) -> None:
    """The test split's counts as a labelled grid, true class by row, predicted by column.

    Args:
      path: the PNG file to write.
      matrix: the counts [true class, predicted class], from confusion_matrix.
      classes: the class names by index.
    """
    plt = _figure()
    size = max(3.5, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center",
                color="white" if n > matrix.max() / 2 else "black")
    ax.set_title("test split")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_html(out_dir: str, numbers: dict) -> str:
    """index.html with the numbers and the pictures inlined (one self-contained file).

    Args:
      out_dir: the report folder, holding the PICTURES.
      numbers: the report's numbers (build_report); its "summary" becomes the table.

    Returns:
      The path of index.html.
    """
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in numbers["summary"].items())
    pictures = ""
    for name in PICTURES:
        with tf.io.gfile.GFile(os.path.join(out_dir, name), "rb") as f:
            data = base64.b64encode(f.read()).decode()
        title = name.removesuffix(".png").replace("_", " ")
        pictures += f'<h2>{title}</h2><img src="data:image/png;base64,{data}">'
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Run report</title></head>"
            f"<body style='font-family:sans-serif'><h1>Run report</h1><table border=1 "
            f"cellpadding=4>{rows}</table>{pictures}</body></html>")
    path = os.path.join(out_dir, REPORT_HTML)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(page)
    return path


def build_report(examples_uri: str, model_dir: str, history: dict, blessed: bool | None,
                 out_dir: str, num_samples: int = 16,
                 serving_check: dict | None = None) -> dict:
    """Writes the pictures, report.json and index.html into out_dir; returns the numbers.

    Args:
      examples_uri: the Examples artifact's uri; its test split is predicted.
      model_dir: the SavedModel to predict with, through its serving signature.
      history: the Trainer's history (see draw_learning_curves).
      blessed: the Evaluator's verdict (None: unknown).
      out_dir: the report folder (created if missing).
      num_samples: photos in samples.png.
      serving_check: the check's `blessing_entry` (None: no check ran); the page says
        whether TF Serving would serve the model, and if not, why.

    Returns:
      The numbers in report.json: "summary" (the page's table), "confusion_matrix" and
      "misclassified" ({"path", "true", "predicted"} per wrong test image).
    """
    tf.io.gfile.makedirs(out_dir)
    images, labels, paths = read_split(examples_uri, "test")
    probabilities, classes = predict(model_dir, images)
    predicted = np.argmax(probabilities, axis=1)
    matrix = confusion_matrix(labels, predicted, len(classes))
    draw_samples(os.path.join(out_dir, PICTURES[0]), images, labels, probabilities, classes,
                 num_samples)
    draw_learning_curves(os.path.join(out_dir, PICTURES[1]), history)
    draw_confusion_matrix(os.path.join(out_dir, PICTURES[2]), matrix, classes)
    last = {p: history[p]["history"]["val_accuracy"][-1] for p in ("phase1", "phase2")
            if p in history}
    numbers = {
        "summary": {"classes": ", ".join(classes), "test images": len(labels),
                    "test accuracy (served model)": round(float(np.mean(predicted == labels)), 4),
                    **{f"{p} validation accuracy": round(v, 4) for p, v in last.items()},
                    "blessed": blessed,
                    "serving check": describe(serving_check)},
        "confusion_matrix": matrix.tolist(),
        "misclassified": [{"path": p, "true": classes[t], "predicted": classes[q]}
                          for p, t, q in zip(paths, labels, predicted, strict=True) if t != q],
    }
    with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_JSON), "w") as f:
        json.dump(numbers, f, indent=1)
    write_html(out_dir, numbers)
    return numbers


@component
def RunReportGen(  # noqa: N802 (TFX component names are classes)
    examples: InputArtifact[Examples],
    model: InputArtifact[Model],
    model_run: InputArtifact[ModelRun],
    blessing: InputArtifact[ModelBlessing],
    serving_check: InputArtifact[InfraBlessing],
    report: OutputArtifact[RunReport],
    num_samples: Parameter[int] = 16,
) -> None:
    """Pictures (samples, learning curves, confusion matrix) and an HTML page for the run;
    `serving_check` is the blessing of the ServingCheck (or InfraValidator).

    Args:
      examples: the Examples; the report predicts its test split.
      model: the Trainer's Model (its serving SavedModel).
      model_run: the Trainer's ModelRun (the training history).
      blessing: the Evaluator's ModelBlessing.
      serving_check: the ServingCheck's (or InfraValidator's) InfraBlessing.
      report: the output folder: index.html, report.json and the pictures.
      num_samples: photos in samples.png.
    """
    with tf.io.gfile.GFile(os.path.join(model_run.uri, HISTORY_FILE)) as f:
        history = json.load(f)
    blessed = bool(blessing.get_int_custom_property("blessed"))
    build_report(examples.uri, path_utils.serving_model_path(model.uri), history, blessed,
                 report.uri, num_samples,
                 blessing_entry(serving_check.mlmd_artifact.custom_properties))
