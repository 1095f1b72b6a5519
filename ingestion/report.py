"""The ingestion report: every input file once, written or skipped with its reason, the counts
per split, class and reason, and the checks that it accounts for every file."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator

import apache_beam as beam
import tensorflow as tf

from contract import features
from contract.artifacts import INGESTION_REPORT_FILE as REPORT_FILE
from ingestion.names import printable
from ingestion.reasons import IngestError, reason_key
from ingestion.scan import ImageTree
from ingestion.settings import NEAR_DUPLICATE_MAX_DISTANCE


def build_report(tree: ImageTree, fp: str, outcomes: list[dict],
                 plan: dict | None = None) -> dict:
    """The ingestion report: one entry per input file, and counts per split/class/reason.

    ``per_class`` reconciles each class: its inputs (every entry in its folders) are the
    written plus the skipped ones. A reason's count key is its text before ":" or " (".
    ``warnings`` holds the scan's warnings (class imbalance); ``near_duplicates`` the groups
    of near-duplicate images, each kept in one split, and a written file of a group (not its
    first) names the first in ``near_duplicate_of`` and, if it was moved, ``moved_from``.

    Args:
      tree: the scan of the image folder.
      fp: the input's fingerprint.
      outcomes: one {"path", "status", ...} per input file, written or skipped.
      plan: the split plan (splits.plan_splits), for its near-duplicate groups.

    Returns:
      The report, as written to ingestion_report.json.
    """
    groups = (plan or {}).get("groups", [])
    by_path = {o["path"]: o for o in outcomes}
    for group in groups:
        first = group["members"][0]["path"]
        for member in group["members"][1:]:
            by_path[member["path"]]["near_duplicate_of"] = first
            if "moved_from" in member:
                by_path[member["path"]]["moved_from"] = member["moved_from"]
    counts: dict[str, Counter] = defaultdict(Counter)
    skipped: Counter = Counter()
    class_skipped: Counter = Counter()
    for o in outcomes:
        if o["status"] == "written":
            counts[o["split"]][o["label_name"]] += 1
        else:
            skipped[reason_key(o["reason"])] += 1
            if o.get("label_name") is not None:
                class_skipped[o["label_name"]] += 1
    per_split = {s: {c: counts[s][c] for c in tree.classes} for s in features.SPLITS}
    inputs = tree.inputs_per_class()
    per_class = {c: {"inputs": inputs[c], "written": sum(counts[s][c] for s in features.SPLITS),
                     "skipped": class_skipped[c]} for c in tree.classes}
    return {
        "root": printable(tree.root),
        "layout": tree.layout,
        "classes": tree.classes,
        "fingerprint": fp,
        "total_files": len(outcomes),
        "written": sum(sum(c.values()) for c in counts.values()),
        "skipped": sum(skipped.values()),
        "per_split": per_split,
        "per_split_total": {s: sum(per_split[s].values()) for s in features.SPLITS},
        "skipped_by_reason": dict(sorted(skipped.items())),
        "per_class": per_class,
        "outside_class_folders": sum(1 for o in outcomes if o["status"] == "skipped"
                                     and o.get("label_name") is None),
        "warnings": list(tree.warnings),
        "near_duplicates": {
            "max_distance": NEAR_DUPLICATE_MAX_DISTANCE,
            "groups": len(groups),
            "images": sum(len(g["members"]) for g in groups),
            "moved": sum("moved_from" in m for g in groups for m in g["members"]),
            "list": groups,
        },
        "files": sorted(outcomes, key=lambda o: o["path"]),
    }


def outcome_written(split_record: tuple[str, dict]) -> dict:
    """The report entry of a written image.

    Args:
      split_record: (split name, the image's record).

    Returns:
      {"path", "status": "written", "split", "label_name", "sha256"}.
    """
    split, r = split_record
    return {"path": r["source"].path, "status": "written", "split": split,
            "label_name": r["label_name"], "sha256": r["sha256"]}


def outcome_skipped(skip: tuple[str, str, str | None]) -> dict:
    """The report entry of a skipped file.

    Args:
      skip: (report path, reason, class name or None outside the class folders).

    Returns:
      {"path", "status": "skipped", "reason"} and "label_name" inside a class folder.
    """
    path, reason, label_name = skip
    outcome = {"path": path, "status": "skipped", "reason": reason}
    if label_name is not None:
        outcome["label_name"] = label_name
    return outcome


class WriteReport(beam.DoFn):
    """Builds the report from all outcomes and writes it beside the splits."""

    def __init__(self, tree: ImageTree, fp: str, out_dir: str):
        self._tree, self._fp, self._out_dir = tree, fp, out_dir

    def process(self, outcomes: list[dict], plan: dict) -> Iterator[dict]:
        """Writes the report of all outcomes to the output folder and yields it."""
        report = build_report(self._tree, self._fp, outcomes, plan)
        with tf.io.gfile.GFile(os.path.join(self._out_dir, REPORT_FILE), "w") as f:
            json.dump(report, f, indent=1)
        yield report


def check_accounting(tree: ImageTree, report: dict) -> None:
    """Every input file appears exactly once in the report, and each class reconciles.

    Args:
      tree: the scan of the image folder.
      report: the ingestion report written by the conversion.

    Raises:
      RuntimeError: the report's paths are not exactly the scanned entries, each once, or a
        class's inputs are not its written plus its skipped files.
    """
    listed = sorted([f.path for f in tree.files] + [p for p, _, _ in tree.skipped])
    reported = sorted(o["path"] for o in report["files"])
    if listed != reported:
        missing = sorted(set(listed) - set(reported))[:5]
        extra = sorted(set(reported) - set(listed))[:5]
        raise RuntimeError(f"ingestion report does not account for every file once: "
                           f"missing {missing}, unexpected {extra}")
    inputs = tree.inputs_per_class()
    per_class: dict[str, Counter] = defaultdict(Counter)
    for o in report["files"]:
        if o.get("label_name") is not None:
            per_class[o["label_name"]][o["status"]] += 1
    for name in tree.classes:
        counted = report["per_class"][name]
        written, skipped = per_class[name]["written"], per_class[name]["skipped"]
        if not (inputs[name] == counted["inputs"] == written + skipped
                and counted["written"] == written and counted["skipped"] == skipped):
            raise RuntimeError(
                f"ingestion report does not reconcile class {name!r}: {inputs[name]} inputs, "
                f"{written} written + {skipped} skipped (report: {counted})")


def check_every_class_written(report: dict) -> None:
    """Each class has at least one written image (raises IngestError if not).

    Args:
      report: the ingestion report written by the conversion.

    Raises:
      IngestError: a class's files were all skipped (undecodable, too large, duplicates...).
    """
    for name, counts in report["per_class"].items():
        if not counts["written"]:
            reasons = Counter(reason_key(o["reason"]) for o in report["files"]
                              if o.get("label_name") == name and o["status"] == "skipped")
            shown = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
            raise IngestError(f"class {name!r} has no usable images: all {counts['inputs']} "
                              f"files were skipped ({shown})")


def summarize(report: dict) -> str:
    """One line: written per split, skipped per reason, and the near-duplicate groups.

    Args:
      report: an ingestion report.

    Returns:
      The summary line.
    """
    splits = ", ".join(f"{s} {n}" for s, n in report["per_split_total"].items())
    text = f"{report['written']} written ({splits}), {report['skipped']} skipped"
    if report["skipped_by_reason"]:
        text += " [" + ", ".join(f"{r}: {n}" for r, n in report["skipped_by_reason"].items()) + "]"
    near = report.get("near_duplicates", {})
    if near.get("groups"):
        text += (f"; {near['groups']} near-duplicate groups ({near['images']} images, "
                 f"{near['moved']} moved to their group's split)")
    return text

