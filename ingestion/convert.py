"""Image folder -> sharded TFRecord files of tf.Example, plus an ingestion report (a Beam job).

Two layouts are accepted (class names sorted, at least two classes):
  * ``root/train/<class>/`` + ``root/validation/<class>/``: train stays train; the validation
    folder is split deterministically into eval and test (the tutorial moves 20% of it to test);
  * ``root/<class>/``: a deterministic hash split into train/eval/test (default 80/10/10).

Every file is decoded once to validate it; corrupt, non-image, tiny or undecodable files are
skipped with a reason; identical content is kept once (so it can never land in two splits).
The report accounts for every file under the root exactly once. Output goes to
``<tfrecords_dir>/<content fingerprint>/`` so unchanged input is never converted twice, and
ImportExampleGen sees the same files (and TFX caching skips it) on a rerun.

Runs in memory locally; the same transforms run on any Beam runner.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import apache_beam as beam
import tensorflow as tf

from contract import features
from contract.artifacts import INGESTION_REPORT_FILE as REPORT_FILE
from contract.labels import LABELS_FILE, format_labels
from ingestion.beam_options import beam_pipeline_args
from ingestion.settings import SplitSettings

LOG = logging.getLogger("ingestion")

# Bump when the conversion output changes, so old fingerprints are not reused.
CONVERSION_VERSION = 1
COMPLETE_MARKER = "_COMPLETE"

TRAIN_VALIDATION = "train_validation"
CLASS_FOLDERS = "class_folders"

class IngestError(ValueError):
    """The image folder cannot be converted (missing, wrong layout, too few classes)."""


@dataclass(frozen=True)
class SourceFile:
    """One candidate image: path relative to the root, its class, and which folder it came from."""

    path: str
    label: int
    origin: str  # "train" | "validation" | "all"


@dataclass
class ImageTree:
    """The scan of an image folder: layout, classes, candidate images and misplaced files."""

    root: str
    layout: str
    classes: list[str]
    files: list[SourceFile]
    misplaced: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class IngestResult:
    """Where the TFRecords are, the report, and whether an earlier conversion was reused."""

    output_dir: str
    report: dict
    reused: bool
    seconds: float = 0.0  # wall time of convert_image_tree, scan and fingerprint included


# ---------------------------------------------------------------------------------------------
# Scanning the folder


def _visible(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _walk_files(top: str, root: str) -> list[str]:
    """All files below top (recursively, hidden included), as paths relative to root."""
    found = []
    for dirpath, dirnames, filenames in tf.io.gfile.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def _class_dirs(folder: str) -> list[str]:
    return [n.rstrip("/") for n in _visible(tf.io.gfile.listdir(folder))
            if tf.io.gfile.isdir(os.path.join(folder, n))]


def scan_image_tree(root: str) -> ImageTree:
    """Finds the layout, the classes and every file under root (raises IngestError if unusable).

    Args:
      root: the image folder (local path or a tf.io.gfile URL).

    Returns:
      The scan: candidate images per class and the files outside the class folders.

    Raises:
      IngestError: root is missing, has neither layout, has fewer than two classes, a
        validation/ class that train/ lacks, or no files in its class folders.
    """
    if not tf.io.gfile.isdir(root):
        raise IngestError(f"image folder {root!r} does not exist or is not a directory")
    top = _class_dirs(root)
    if "train" in top or "validation" in top:
        if "train" not in top or "validation" not in top:
            raise IngestError(
                f"{root!r} has a {'train' if 'train' in top else 'validation'}/ folder but no "
                f"{'validation' if 'train' in top else 'train'}/ folder; expected "
                "root/train/<class>/ + root/validation/<class>/ or root/<class>/")
        layout, origins = TRAIN_VALIDATION, ["train", "validation"]
        classes = _class_dirs(os.path.join(root, "train"))
        extra = sorted(set(_class_dirs(os.path.join(root, "validation"))) - set(classes))
        if extra:
            raise IngestError(f"validation/ has classes that train/ lacks: {extra}")
    else:
        layout, origins, classes = CLASS_FOLDERS, [""], top
    if len(classes) < 2:
        raise IngestError(
            f"found {len(classes)} class folder(s) in {root!r} ({classes}); need at least 2. "
            "Expected root/train/<class>/ + root/validation/<class>/ or root/<class>/")

    tree = ImageTree(root=root, layout=layout, classes=classes, files=[])
    class_paths = set()
    for origin in origins:
        for index, name in enumerate(classes):
            folder = os.path.join(root, origin, name)
            if not tf.io.gfile.isdir(folder):
                continue
            for path in _walk_files(folder, root):
                class_paths.add(path)
                if any(part.startswith(".") for part in path.split(os.sep)):
                    tree.misplaced.append((path, "hidden file"))
                else:
                    tree.files.append(SourceFile(path, index, origin or "all"))
    for path in _walk_files(root, root):
        if path not in class_paths:
            tree.misplaced.append((path, "not in a class folder"))
    if not tree.files:
        raise IngestError(f"no files found in the class folders of {root!r}")
    return tree


# ---------------------------------------------------------------------------------------------
# Fingerprint


def _sha256_file(path: str) -> str:
    with tf.io.gfile.GFile(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fingerprint(tree: ImageTree, settings: SplitSettings) -> str:
    """Content fingerprint of the input (paths, labels, bytes) and the conversion settings.

    Args:
      tree: the scan of the image folder; every file in it is read and hashed.
      settings: the split settings, part of the fingerprint.

    Returns:
      The first 16 hex digits of a SHA-256.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"version": CONVERSION_VERSION, "layout": tree.layout,
                         "classes": tree.classes, "settings": asdict(settings)}).encode())
    entries = [(f.path, f"{f.label}:{f.origin}") for f in tree.files]
    entries += [(p, "misplaced") for p, _ in tree.misplaced]
    entries.sort()
    paths = [os.path.join(tree.root, p) for p, _ in entries]
    started, last = time.monotonic(), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for i, ((path, tag), digest) in enumerate(zip(entries, pool.map(_sha256_file, paths),
                                                      strict=True)):
            h.update(f"{path}\0{tag}\0{digest}\n".encode())
            if time.monotonic() - last > 5:
                last = time.monotonic()
                LOG.info("fingerprinting: %d/%d files", i + 1, len(entries))
    LOG.info("fingerprinted %d files in %.1fs", len(entries), time.monotonic() - started)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The Beam transforms


def inspect_image(data: bytes, min_side: int) -> tuple[dict | None, str | None]:
    """Decodes once to validate: returns (info, None) or (None, skip reason).

    Args:
      data: the file's bytes.
      min_side: the smallest allowed height and width, in pixels.

    Returns:
      ({"format", "height", "width"}, None) for a usable image, else (None, the skip reason).
    """
    if not data:
        return None, "empty file"
    fmt = features.image_format(data)
    if fmt is None:
        return None, f"not an image (not {features.IMAGE_FORMATS})"
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        message = (e.message or str(e)).strip().splitlines()[0][:200]
        return None, f"undecodable {fmt}: {message}"
    height, width = int(image.shape[0]), int(image.shape[1])
    if min(height, width) < min_side:
        return None, f"too small ({width}x{height} px, minimum side {min_side})"
    return {"format": fmt, "height": height, "width": width}, None


class DecodeAndValidate(beam.DoFn):
    """Reads and decodes one file; emits a record, or a skip on the 'skipped' output."""

    SKIPPED = "skipped"

    def __init__(self, root: str, classes: list[str], min_side: int, total: int):
        self._root, self._classes, self._min_side, self._total = root, classes, min_side, total
        self._seen = 0

    def process(self, source: SourceFile) -> Iterator:
        """Yields the record of a decodable file, or (path, reason) on the skipped output."""
        self._seen += 1
        if self._seen % 250 == 0:
            LOG.info("decoded %d/%d files (this worker)", self._seen, self._total)
        try:
            with tf.io.gfile.GFile(os.path.join(self._root, source.path), "rb") as f:
                data = f.read()
        except (OSError, tf.errors.OpError) as e:
            yield beam.pvalue.TaggedOutput(self.SKIPPED, (source.path, f"unreadable: {e}"))
            return
        info, reason = inspect_image(data, self._min_side)
        if reason:
            beam.metrics.Metrics.counter("ingest", "skipped").inc()
            yield beam.pvalue.TaggedOutput(self.SKIPPED, (source.path, reason))
            return
        beam.metrics.Metrics.counter("ingest", "decoded").inc()
        yield {"source": source, "data": data, "sha256": hashlib.sha256(data).hexdigest(),
               "label_name": self._classes[source.label], **info}


_ORIGIN_PRIORITY = {"train": 0, "all": 0, "validation": 1}


def keep_first_copy(item: tuple[str, Iterable[dict]]) -> Iterator:
    """Of records with identical content keeps one (train copy first, then by path).

    Args:
      item: (sha256, the decoded records with that content), as GroupByKey emits it.

    Yields:
      The kept record, then (path, reason) on the skipped output for each other copy.
    """
    _, records = item
    records = sorted(records, key=lambda r: (_ORIGIN_PRIORITY[r["source"].origin],
                                             r["source"].path))
    kept = records[0]
    yield kept
    for other in records[1:]:
        reason = f"duplicate of {kept['source'].path}"
        if other["label_name"] != kept["label_name"]:
            reason += f" (which is labelled {kept['label_name']})"
        yield beam.pvalue.TaggedOutput(DecodeAndValidate.SKIPPED, (other["source"].path, reason))


def assign_splits(item: tuple[tuple[str, int], Iterable[dict]],
                  settings: SplitSettings) -> Iterator[tuple[str, dict]]:
    """Deterministic, per-class split: records ordered by content hash, cut at the fractions.

    Args:
      item: ((origin, class index), the records of that class from that folder).
      settings: the split fractions.

    Yields:
      (split name, record) for each record.
    """
    (origin, _), records = item
    records = sorted(records, key=lambda r: r["sha256"])
    n = len(records)
    for rank, record in enumerate(records):
        q = rank / n
        if origin == "train":
            split = "train"
        elif origin == "validation":
            split = "test" if q < settings.validation_test_fraction else "eval"
        elif q < settings.test_fraction:
            split = "test"
        elif q < settings.test_fraction + settings.eval_fraction:
            split = "eval"
        else:
            split = "train"
        yield split, record


def _feature(kind: str, value: str | bytes | int) -> tf.train.Feature:
    """A one-value feature of the kind contract.features.KINDS gives (str is UTF-8 encoded)."""
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    value = value.encode() if isinstance(value, str) else value
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def to_example(record: dict) -> bytes:
    """The serialized tf.Example of one kept image (format in contract/features.py).

    Args:
      record: a record from DecodeAndValidate (source, data, sha256, label_name, format,
        height, width).

    Returns:
      The serialized tf.Example.
    """
    source = record["source"]
    values = {features.IMAGE_KEY: record["data"], features.LABEL_KEY: source.label,
              features.LABEL_NAME_KEY: record["label_name"], features.PATH_KEY: source.path,
              features.SHA256_KEY: record["sha256"], features.HEIGHT_KEY: record["height"],
              features.WIDTH_KEY: record["width"], features.FORMAT_KEY: record["format"]}
    example = tf.train.Example(features=tf.train.Features(feature={
        key: _feature(features.KINDS[key], value) for key, value in values.items()}))
    return example.SerializeToString()


def build_report(tree: ImageTree, fp: str, outcomes: list[dict]) -> dict:
    """The ingestion report: one entry per input file, and counts per split/class/reason.

    Args:
      tree: the scan of the image folder.
      fp: the input's fingerprint.
      outcomes: one {"path", "status", ...} per input file, written or skipped.

    Returns:
      The report, as written to ingestion_report.json.
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    skipped: Counter = Counter()
    for o in outcomes:
        if o["status"] == "written":
            counts[o["split"]][o["label_name"]] += 1
        else:
            skipped[o["reason"].split(":")[0].split(" (")[0]] += 1
    per_split = {s: {c: counts[s][c] for c in tree.classes} for s in features.SPLITS}
    return {
        "root": tree.root,
        "layout": tree.layout,
        "classes": tree.classes,
        "fingerprint": fp,
        "total_files": len(outcomes),
        "written": sum(sum(c.values()) for c in counts.values()),
        "skipped": sum(skipped.values()),
        "per_split": per_split,
        "per_split_total": {s: sum(per_split[s].values()) for s in features.SPLITS},
        "skipped_by_reason": dict(sorted(skipped.items())),
        "files": sorted(outcomes, key=lambda o: o["path"]),
    }


def _outcome_written(split_record: tuple[str, dict]) -> dict:
    split, r = split_record
    return {"path": r["source"].path, "status": "written", "split": split,
            "label_name": r["label_name"], "sha256": r["sha256"]}


def _outcome_skipped(path_reason: tuple[str, str]) -> dict:
    path, reason = path_reason
    return {"path": path, "status": "skipped", "reason": reason}


class _WriteReport(beam.DoFn):
    def __init__(self, tree: ImageTree, fp: str, out_dir: str):
        self._tree, self._fp, self._out_dir = tree, fp, out_dir

    def process(self, outcomes: list[dict]) -> Iterator[dict]:
        """Writes the report of all outcomes to the output folder and yields it."""
        report = build_report(self._tree, self._fp, outcomes)
        with tf.io.gfile.GFile(os.path.join(self._out_dir, REPORT_FILE), "w") as f:
            json.dump(report, f, indent=1)
        yield report


def build_conversion(p: beam.Pipeline, tree: ImageTree, settings: SplitSettings, fp: str,
                     out_dir: str) -> None:
    """Adds the conversion to a Beam pipeline: decode, dedupe, split, write, report.

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
            DecodeAndValidate(tree.root, tree.classes, settings.min_image_side, len(tree.files))
        ).with_outputs(DecodeAndValidate.SKIPPED, main="ok"))
    unique = (
        decoded.ok
        | "KeyByContent" >> beam.Map(lambda r: (r["sha256"], r))
        | "GroupByContent" >> beam.GroupByKey()
        | "KeepFirstCopy" >> beam.FlatMap(keep_first_copy).with_outputs(
            DecodeAndValidate.SKIPPED, main="ok"))
    split = (
        unique.ok
        | "KeyByOriginClass" >> beam.Map(lambda r: ((r["source"].origin, r["source"].label), r))
        | "GroupByOriginClass" >> beam.GroupByKey()
        | "AssignSplits" >> beam.FlatMap(assign_splits, settings))
    for name in features.SPLITS:
        _ = (
            split
            | f"Only{name}" >> beam.Filter(lambda sr, n=name: sr[0] == n)
            | f"ToExample{name}" >> beam.Map(lambda sr: to_example(sr[1]))
            | f"Write{name}" >> beam.io.WriteToTFRecord(
                os.path.join(out_dir, name, "data"), file_name_suffix=".tfrecord",
                num_shards=settings.num_shards))
    skipped = (
        (decoded[DecodeAndValidate.SKIPPED], unique[DecodeAndValidate.SKIPPED],
         p | "Misplaced" >> beam.Create(tree.misplaced))
        | "AllSkipped" >> beam.Flatten())
    _ = (
        (split | "Written" >> beam.Map(_outcome_written),
         skipped | "Skipped" >> beam.Map(_outcome_skipped))
        | "AllOutcomes" >> beam.Flatten()
        | "Gather" >> beam.combiners.ToList()
        | "WriteReport" >> beam.ParDo(_WriteReport(tree, fp, out_dir)))


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
      IngestError: the image folder cannot be converted.
      RuntimeError: the report does not account for every input file once.
    """
    settings = settings or SplitSettings()
    root = os.path.abspath(root) if "://" not in root else root
    started = time.monotonic()
    tree = scan_image_tree(root)
    LOG.info("found %d candidate images in %d classes %s (%s layout), %d misplaced files",
             len(tree.files), len(tree.classes), tree.classes, tree.layout, len(tree.misplaced))
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
    with tf.io.gfile.GFile(os.path.join(out_dir, LABELS_FILE), "w") as f:
        f.write(format_labels(tree.classes))
    with tf.io.gfile.GFile(os.path.join(out_dir, COMPLETE_MARKER), "w") as f:
        f.write(fp)
    LOG.info("converted in %.1fs: %s", time.monotonic() - started, summarize(report))
    return IngestResult(out_dir, report, False, time.monotonic() - started)


def check_accounting(tree: ImageTree, report: dict) -> None:
    """Every input file appears exactly once in the report (raises if not).

    Args:
      tree: the scan of the image folder.
      report: the ingestion report written by the conversion.

    Raises:
      RuntimeError: the report's paths are not exactly the scanned files, each once.
    """
    listed = sorted([f.path for f in tree.files] + [p for p, _ in tree.misplaced])
    reported = sorted(o["path"] for o in report["files"])
    if listed != reported:
        missing = sorted(set(listed) - set(reported))[:5]
        extra = sorted(set(reported) - set(listed))[:5]
        raise RuntimeError(f"ingestion report does not account for every file once: "
                           f"missing {missing}, unexpected {extra}")


def summarize(report: dict) -> str:
    """One line: written per split and skipped per reason.

    Args:
      report: an ingestion report.

    Returns:
      The summary line.
    """
    splits = ", ".join(f"{s} {n}" for s, n in report["per_split_total"].items())
    text = f"{report['written']} written ({splits}), {report['skipped']} skipped"
    if report["skipped_by_reason"]:
        text += " [" + ", ".join(f"{r}: {n}" for r, n in report["skipped_by_reason"].items()) + "]"
    return text


def main(argv: list[str] | None = None) -> int:
    """CLI: convert an image folder (e.g. as a standalone Beam job on Dataflow).

    Args:
      argv: --data-dir, --output-dir and any Beam pipeline arguments; sys.argv[1:] when None.

    Returns:
      The exit status: 0, or 2 when the image folder cannot be converted.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--output-dir", required=True, help="TFRecords parent folder")
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        result = convert_image_tree(args.data_dir, args.output_dir,
                                    beam_args=beam_args or None)
    except IngestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{result.output_dir}: {summarize(result.report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
