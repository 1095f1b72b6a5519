"""The batch prediction pipeline: read and check each image as ingestion does, classify the
good ones with RunInference, write one row per image (CSV and JSONL) and one per skipped file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import apache_beam as beam
import tensorflow as tf
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from ingestion.beam_options import beam_pipeline_args
from ingestion.settings import SplitSettings
from predict.model import DEFAULT_BATCH_SIZE, ServedModelHandler, read_labels, resolve_version
from predict.sources import Candidate, example_image, list_folder, read_candidate, tfrecord_files
from serving.server.loader import LoadError, load_like_tf_serving

CSV_FILE, JSONL_FILE, SKIPPED_FILE = "predictions.csv", "predictions.jsonl", "skipped.csv"
PREDICTION_FILES = {"csv": CSV_FILE, "jsonl": JSONL_FILE, "skipped": SKIPPED_FILE}
SKIPPED = "skipped"
CSV_HEADER, SKIPPED_HEADER = ["path", "class"], ["path", "reason"]  # CSV: then the classes


@dataclass
class PredictResult:
    """What a batch prediction wrote."""

    version_dir: str
    classes: list[str]
    rows: int
    skipped: Counter = field(default_factory=Counter)  # reason -> files
    outputs: dict[str, str] = field(default_factory=dict)  # "csv", "jsonl", "skipped" -> path


def csv_line(values: list) -> str:
    """One CSV record (RFC 4180 quoting), without its line break.

    Args:
      values: the fields.

    Returns:
      The record.
    """
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


class _ReadFile(beam.DoFn):
    def __init__(self, settings: SplitSettings):
        self._settings = settings

    def process(self, candidate: Candidate) -> Iterator:
        data, reason = read_candidate(candidate, self._settings)
        if reason:
            yield beam.pvalue.TaggedOutput(SKIPPED, (candidate.path, reason))
        else:
            yield candidate.path, data


class _ReadExample(beam.DoFn):
    def __init__(self, settings: SplitSettings):
        self._settings = settings

    def process(self, file_and_record: tuple[str, bytes]) -> Iterator:
        filename, record = file_and_record
        path, data, reason = example_image(record, self._settings, filename)
        if reason:
            yield beam.pvalue.TaggedOutput(SKIPPED, (path, reason))
        else:
            yield path, data


class _ToRow(beam.DoFn):
    def __init__(self, classes: list[str]):
        self._classes = classes

    def process(self, keyed: tuple[str, PredictionResult]) -> Iterator:
        path, result = keyed
        if isinstance(result.inference, str):  # the model refused the image
            yield beam.pvalue.TaggedOutput(SKIPPED, (path, result.inference))
            return
        probabilities = [float(p) for p in result.inference]
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        yield {"path": path, "class": self._classes[best],
               "probabilities": dict(zip(self._classes, probabilities, strict=True))}


def predict_images(model: str, source: str, output_dir: str,
                   settings: SplitSettings | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   beam_args: list[str] | None = None) -> PredictResult:
    """Classifies every image of a folder, or of TFRecord files of tf.Examples.

    Args:
      model: a SavedModel version directory or a model base path (its newest version).
      source: a folder (any layout; every file below it is a candidate) or a TFRecord glob
        pattern of tf.Examples with the image feature.
      output_dir: where predictions.csv, predictions.jsonl and skipped.csv are written.
      settings: ingestion's limits for reading and checking files (defaults: ingestion's).
      batch_size: the most images per model run.
      beam_args: Beam pipeline arguments (default: the in-memory runner).

    Returns:
      The result: rows written, files skipped by reason, output paths.

    Raises:
      ValueError: the model or the source cannot be used (one line; InputError included).
    """
    settings = settings or SplitSettings()
    version_dir = resolve_version(model)
    classes = read_labels(version_dir)
    try:  # a version TF Serving would not serve is refused here, in one line
        load_like_tf_serving(version_dir)[0].close()
    except LoadError as e:
        raise ValueError(f"--model: {e}") from None
    try:
        tf.io.gfile.makedirs(output_dir)
    except tf.errors.OpError as e:
        raise ValueError(f"--output-dir {output_dir} cannot be made: {e.message}") from None
    outputs = {kind: os.path.join(output_dir, name) for kind, name in PREDICTION_FILES.items()}
    folder = tf.io.gfile.isdir(source)
    candidates, listed_skips = list_folder(source) if folder else ([], [])
    files = [] if folder else tfrecord_files(source)
    with beam.Pipeline(argv=beam_args or beam_pipeline_args()) as pipeline:
        if folder:
            read = (pipeline | "Files" >> beam.Create(candidates)
                    | "Read" >> beam.ParDo(_ReadFile(settings)).with_outputs(SKIPPED,
                                                                             main="images"))
        else:
            read = (pipeline | "Files" >> beam.Create(files)
                    | "Records" >> beam.io.ReadAllFromTFRecord(with_filename=True)
                    | "Read" >> beam.ParDo(_ReadExample(settings)).with_outputs(SKIPPED,
                                                                                main="images"))
        inferred = read.images | "Infer" >> RunInference(
            KeyedModelHandler(ServedModelHandler(version_dir, batch_size)))
        rows = inferred | "Rows" >> beam.ParDo(_ToRow(classes)).with_outputs(SKIPPED,
                                                                              main="rows")
        skipped = ((pipeline | "Listed" >> beam.Create(listed_skips), read.skipped,
                    rows.skipped) | "Skips" >> beam.Flatten())
        _write(rows.rows | "JSON" >> beam.Map(json.dumps), outputs["jsonl"], "WriteJSONL")
        _write(rows.rows | "CSV" >> beam.Map(lambda r: csv_line(
            [r["path"], r["class"], *r["probabilities"].values()])), outputs["csv"], "WriteCSV",
            csv_line(CSV_HEADER + classes))
        _write(skipped | "SkipCSV" >> beam.Map(csv_line), outputs["skipped"], "WriteSkipped",
               csv_line(SKIPPED_HEADER))
    # The runner writes rows in no order: sorted by path, afterwards.
    rows_written = len(_sort_jsonl(outputs["jsonl"]))
    _sort_csv(outputs["csv"], CSV_HEADER + classes)
    reasons = Counter(reason for _, reason in _sort_csv(outputs["skipped"], SKIPPED_HEADER))
    return PredictResult(version_dir, classes, rows_written, reasons, outputs)


def _write(lines: beam.PCollection, path: str, label: str, header: str | None = None) -> None:
    _ = lines | label >> beam.io.WriteToText(path, shard_name_template="", header=header)


def _sort_jsonl(path: str) -> list[str]:
    with tf.io.gfile.GFile(path) as f:
        lines = sorted(line for line in f.read().splitlines() if line)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return lines


def _sort_csv(path: str, header: list[str]) -> list[list[str]]:
    with tf.io.gfile.GFile(path) as f:
        records = sorted(r for r in csv.reader(io.StringIO(f.read())) if r and r != header)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(csv_line(record) + "\n" for record in [header, *records]))
    return records
