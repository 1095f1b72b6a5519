"""Image folder -> sharded TFRecord files of tf.Example, plus an ingestion report (a Beam job).

Two layouts are accepted (class names sorted, at least two classes):
  * ``root/train/<class>/`` + ``root/validation/<class>/``: train stays train; the validation
    folder is split deterministically into eval and test (the tutorial moves 20% of it to test);
  * ``root/<class>/``: a deterministic hash split into train/eval/test (default 80/10/10).

Every file is decoded once to validate it; corrupt, non-image, tiny or undecodable files are
skipped with a one-line human reason; identical content is kept once (so it can never land in
two splits). Hostile input never hangs or crashes the job: only regular files are opened
(FIFOs, devices and broken symlinks are listed as skipped), directory symlinks inside the class
folders are not followed, files over ``max_file_bytes`` are not read, images whose header
declares more than ``max_image_pixels`` are not decoded, and names that are not UTF-8 are
escaped (``printable``). The report accounts for every file under the root exactly once and
reconciles per class (inputs = written + skipped). Output goes to
``<tfrecords_dir>/<content fingerprint>/`` so unchanged input is never converted twice, and
ImportExampleGen sees the same files (and TFX caching skips it) on a rerun.

Runs in memory locally; the same transforms run on any Beam runner.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import apache_beam as beam
import tensorflow as tf

from contract import features
from contract.artifacts import INGESTION_REPORT_FILE as REPORT_FILE
from contract.labels import LABELS_FILE, format_labels
from ingestion.beam_options import beam_pipeline_args
from ingestion.examples import to_example
from ingestion.fingerprint import fingerprint
from ingestion.reasons import IngestError
from ingestion.report import (
    WriteReport,
    check_accounting,
    check_every_class_written,
    outcome_skipped,
    outcome_written,
    summarize,
)
from ingestion.scan import ImageTree, scan_image_tree
from ingestion.settings import SplitSettings
from ingestion.splits import keep_first_copy, placed, plan_splits
from ingestion.validate import DecodeAndValidate, ReadKept

# The names other packages import from here.
__all__ = ["COMPLETE_MARKER", "REPORT_FILE", "IngestError", "IngestResult", "SplitSettings",
           "convert_image_tree", "summarize"]

LOG = logging.getLogger("ingestion")
COMPLETE_MARKER = "_COMPLETE"


@dataclass
class IngestResult:
    """Where the TFRecords are, the report, and whether an earlier conversion was reused."""

    output_dir: str
    report: dict
    reused: bool
    seconds: float = 0.0  # wall time of convert_image_tree, scan and fingerprint included


def build_conversion(p: beam.Pipeline, tree: ImageTree, settings: SplitSettings, fp: str,
                     out_dir: str) -> None:
    """Adds the conversion to a Beam pipeline: decode, dedupe, plan the splits, write, report.

    Only hashes and sizes go through the de-duplication and the plan (the in-memory runner
    holds each shuffled collection whole); each kept file is read again to be written. With
    num_shards 0 the examples stream to the runner's shards; a fixed count groups them all
    first (see benchmarks/README.md).

    Args:
      p: the pipeline to add the transforms to.
      tree: the scan of the image folder.
      settings: the split, size and sharding settings.
      fp: the input's fingerprint, recorded in the report.
      out_dir: where the split folders and the report are written.
    """
    decoded = (
        p
        | "ListFiles" >> beam.Create(tree.files)
        | "Reshuffle" >> beam.Reshuffle()
        | "DecodeAndValidate" >> beam.ParDo(
            DecodeAndValidate(tree.root, tree.classes, settings, len(tree.files))
        ).with_outputs(DecodeAndValidate.SKIPPED, main="ok"))
    unique = (
        decoded.ok
        | "KeyByContent" >> beam.Map(lambda r: (r["sha256"], r))
        | "GroupByContent" >> beam.GroupByKey()
        | "KeepFirstCopy" >> beam.FlatMap(keep_first_copy).with_outputs(
            DecodeAndValidate.SKIPPED, main="ok"))
    # The plan needs every image's hashes at once (near-duplicates), so it runs on one worker:
    # small tuples, about 150 bytes an image.
    plan = (
        unique.ok
        | "Placed" >> beam.Map(placed)
        | "GatherPlaced" >> beam.combiners.ToList()
        | "PlanSplits" >> beam.Map(plan_splits, settings))
    split = (
        unique.ok
        | "AssignSplits" >> beam.Map(lambda r, plan: (plan["splits"][r["sha256"]], r),
                                     plan=beam.pvalue.AsSingleton(plan))
        | "ReadKept" >> beam.ParDo(ReadKept(tree.root, tree.classes, settings)).with_outputs(
            ReadKept.SKIPPED, main="ok"))
    for name in features.SPLITS:
        _ = (
            split.ok
            | f"Only{name}" >> beam.Filter(lambda sr, n=name: sr[0] == n)
            | f"ToExample{name}" >> beam.Map(lambda sr: to_example(sr[1]))
            | f"Write{name}" >> beam.io.WriteToTFRecord(
                os.path.join(out_dir, name, "data"), file_name_suffix=".tfrecord",
                num_shards=settings.num_shards))
    skipped = (
        (decoded[DecodeAndValidate.SKIPPED], unique[DecodeAndValidate.SKIPPED],
         split[ReadKept.SKIPPED], p | "SkippedAtScan" >> beam.Create(tree.skipped))
        | "AllSkipped" >> beam.Flatten())
    _ = (
        (split.ok | "Written" >> beam.Map(outcome_written),
         skipped | "Skipped" >> beam.Map(outcome_skipped))
        | "AllOutcomes" >> beam.Flatten()
        | "Gather" >> beam.combiners.ToList()
        | "WriteReport" >> beam.ParDo(WriteReport(tree, fp, out_dir),
                                     plan=beam.pvalue.AsSingleton(plan)))


# ---------------------------------------------------------------------------------------------
# Entry point


def convert_image_tree(root: str, tfrecords_dir: str, settings: SplitSettings | None = None,
                       beam_args: list[str] | None = None) -> IngestResult:
    """Converts root into <tfrecords_dir>/<fingerprint>/ unless that conversion already exists.

    Args:
      root: the image folder.
      tfrecords_dir: the parent folder of the conversions.
      settings: the split settings; the defaults when None.
      beam_args: Beam pipeline arguments; an in-memory local runner when None.

    Returns:
      The output folder, the report, whether it was reused, and the wall time.

    Raises:
      IngestError: the image folder cannot be converted (see scan_image_tree), or a class has
        no usable image once converted (then nothing is marked complete).
      RuntimeError: the report does not account for every input file once.
    """
    settings = settings or SplitSettings()
    root = os.path.abspath(root) if "://" not in root else root
    started = time.monotonic()
    tree = scan_image_tree(root)
    LOG.info("found %d candidate images in %d classes %s (%s layout), %d entries skipped",
             len(tree.files), len(tree.classes), tree.classes, tree.layout, len(tree.skipped))
    fp = fingerprint(tree, settings)
    out_dir = os.path.join(tfrecords_dir, fp)
    if tf.io.gfile.exists(os.path.join(out_dir, COMPLETE_MARKER)):
        with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_FILE)) as f:
            report = json.load(f)
        LOG.info("input unchanged (fingerprint %s): reusing %s", fp, out_dir)
        return IngestResult(out_dir, report, True, time.monotonic() - started)
    if tf.io.gfile.exists(out_dir):
        tf.io.gfile.rmtree(out_dir)  # an interrupted earlier conversion
    tf.io.gfile.makedirs(out_dir)
    with beam.Pipeline(argv=beam_args or beam_pipeline_args()) as p:
        build_conversion(p, tree, settings, fp, out_dir)
    with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_FILE)) as f:
        report = json.load(f)
    check_accounting(tree, report)
    check_every_class_written(report)
    with tf.io.gfile.GFile(os.path.join(out_dir, LABELS_FILE), "w") as f:
        f.write(format_labels(tree.classes))
    with tf.io.gfile.GFile(os.path.join(out_dir, COMPLETE_MARKER), "w") as f:
        f.write(fp)
    LOG.info("converted in %.1fs: %s", time.monotonic() - started, summarize(report))
    return IngestResult(out_dir, report, False, time.monotonic() - started)

