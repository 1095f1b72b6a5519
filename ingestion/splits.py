"""Which copy of identical content is kept, and which split each kept image goes to
(near-duplicates together)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam

from ingestion.near_duplicates import near_duplicate_groups
from ingestion.settings import NEAR_DUPLICATE_MAX_DISTANCE, SplitSettings
from ingestion.validate import DecodeAndValidate

_ORIGIN_PRIORITY = {"train": 0, "all": 0, "validation": 1}


def keep_first_copy(item: tuple[str, Iterable[dict]]) -> Iterator:
    """Of records with identical content keeps one (train copy first, then by path).

    Args:
      item: (sha256, the decoded records with that content), as GroupByKey emits it.

    Yields:
      The kept record, then (path, reason, class) on the skipped output for each other copy.
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
        yield beam.pvalue.TaggedOutput(DecodeAndValidate.SKIPPED,
                                       (other["source"].path, reason, other["label_name"]))


class Placed(NamedTuple):
    """What the split plan needs of one kept image."""

    sha256: str
    phash: int
    origin: str  # "train" | "validation" | "all"
    label: int
    path: str
    label_name: str


def placed(record: dict) -> Placed:
    """The plan's view of a decoded record.

    Args:
      record: a record from DecodeAndValidate.

    Returns:
      Its Placed.
    """
    source = record["source"]
    return Placed(record["sha256"], record["phash"], source.origin, source.label, source.path,
                  record["label_name"])


def _split_at(origin: str, q: float, settings: SplitSettings) -> str:
    """The split of the image at quantile q of its class in its folder (by content hash)."""
    if origin == "train":
        return "train"
    if origin == "validation":
        return "test" if q < settings.validation_test_fraction else "eval"
    if q < settings.test_fraction:
        return "test"
    return "eval" if q < settings.test_fraction + settings.eval_fraction else "train"


def plan_splits(images: list[Placed], settings: SplitSettings,
                max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE) -> dict:
    """Each kept image's split, near-duplicates kept together; deterministic.

    First each class of each folder is ordered by content hash and cut at the fractions
    (train/ stays train; validation/ becomes eval and test; the class-folder layout becomes
    all three). Then each near-duplicate group (perceptual hashes at most max_distance bits
    apart) goes where its first member went, the first being a train/ copy if there is one,
    else the first by path: a photo seen in training is never in eval or test.

    Args:
      images: every kept image (content already de-duplicated).
      settings: the split fractions.
      max_distance: the largest Hamming distance of two near-duplicates.

    Returns:
      {"splits": {sha256: split}, "groups": [{"split", "members": [{"path", "label_name",
      "phash", and "moved_from" (the split it would have had) if it was moved}]}]}, the
      first member first.
    """
    by_folder_class: dict[tuple[str, int], list[Placed]] = defaultdict(list)
    for image in images:
        by_folder_class[image.origin, image.label].append(image)
    splits = {}
    for members in by_folder_class.values():
        members.sort(key=lambda image: image.sha256)
        for rank, image in enumerate(members):
            splits[image.sha256] = _split_at(image.origin, rank / len(members), settings)
    groups = []
    ordered = sorted(images, key=lambda image: image.path)
    for indices in near_duplicate_groups([image.phash for image in ordered], max_distance):
        members = sorted((ordered[i] for i in indices),
                         key=lambda image: (_ORIGIN_PRIORITY[image.origin], image.path))
        split = splits[members[0].sha256]
        entries = []
        for image in members:
            entry = {"path": image.path, "label_name": image.label_name,
                     "phash": f"{image.phash:016x}"}
            if splits[image.sha256] != split:
                entry["moved_from"] = splits[image.sha256]
                splits[image.sha256] = split
            entries.append(entry)
        groups.append({"split": split, "members": entries})
    return {"splits": splits, "groups": groups}
