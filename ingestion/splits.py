"""Which copy of identical content is kept, and which split each kept image goes to."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam

from ingestion.settings import SplitSettings
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

