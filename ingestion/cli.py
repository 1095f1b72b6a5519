"""`tfx-image-transfer-ingest`: convert an image folder, e.g. as a standalone Beam job on
Dataflow."""

from __future__ import annotations

import argparse
import logging
import sys

from ingestion.convert import REPORT_FILE, convert_image_tree
from ingestion.names import printable
from ingestion.reasons import IngestError
from ingestion.report import summarize
from ingestion.settings import DEFAULT_SPLIT, SplitSettings


def main(argv: list[str] | None = None) -> int:
    """CLI: convert an image folder (e.g. as a standalone Beam job on Dataflow).

    Args:
      argv: --data-dir, --output-dir, the size limits and any Beam pipeline arguments;
        sys.argv[1:] when None.

    Returns:
      The exit status: 0, or 2 when the image folder cannot be converted.
    """
    parser = argparse.ArgumentParser(
        prog="tfx-image-transfer-ingest",
        description="Convert an image folder into TFRecords of tf.Example and an ingestion report.")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--output-dir", required=True, help="TFRecords parent folder")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_SPLIT.max_image_pixels,
                        help="Images with more pixels (read from the header) are skipped "
                             "without decoding.")
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_SPLIT.max_file_bytes,
                        help="Larger files are skipped without reading them.")
    args, beam_args = parser.parse_known_args(argv)
    for flag in ("max_image_pixels", "max_file_bytes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = SplitSettings(max_image_pixels=args.max_image_pixels,
                             max_file_bytes=args.max_file_bytes)
    try:
        result = convert_image_tree(args.data_dir, args.output_dir, settings,
                                    beam_args=beam_args or None)
    except IngestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{printable(result.output_dir)}: {summarize(result.report)}")
    for line in notes(result.report):
        print(line)
    return 0


def notes(report: dict, most: int = 20) -> list[str]:
    """The report's warnings and near-duplicate groups, one line each (at most `most` groups).

    Args:
      report: an ingestion report.
      most: the number of groups listed; the rest are counted (all are in the report).

    Returns:
      The lines.
    """
    lines = [f"warning: {w}" for w in report.get("warnings", [])]
    groups = report.get("near_duplicates", {}).get("list", [])
    for group in groups[:most]:
        paths = ", ".join(m["path"] + (f" (moved from {m['moved_from']})" if "moved_from" in m
                                       else "") for m in group["members"])
        lines.append(f"near-duplicates, all in {group['split']}: {paths}")
    if len(groups) > most:
        lines.append(f"... and {len(groups) - most} more near-duplicate groups in "
                     f"{REPORT_FILE}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
