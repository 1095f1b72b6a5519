"""`tfx-image-transfer-predict`: classify a folder of images, or TFRecords of tf.Examples,
with a pushed model, on any Beam runner."""

from __future__ import annotations

import argparse
import logging
import sys

from contract.knobs import range_problems
from ingestion.settings import DEFAULT_SPLIT, SplitSettings
from predict.model import DEFAULT_BATCH_SIZE


def build_parser() -> argparse.ArgumentParser:
    """The command line (Beam pipeline arguments are passed through).

    Returns:
      The parser.
    """
    parser = argparse.ArgumentParser(
        prog="tfx-image-transfer-predict",
        description="Classify every image below a folder (any layout, or a flat folder), or "
                    "the images of TFRecord files of tf.Examples, with a pushed model. Writes "
                    "predictions.csv and predictions.jsonl (one row per image: path, class, "
                    "the probability of each class) and skipped.csv (path, reason). Other "
                    "arguments go to Beam (e.g. --runner=DataflowRunner); by default it runs "
                    "in this process.")
    parser.add_argument("source", help="a folder of images, or a TFRecord glob pattern")
    parser.add_argument("--model", required=True,
                        help="a SavedModel version directory, or a model base path (its newest "
                             "version), e.g. outputs/serving/image_classifier")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"the most images per model run (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--min-image-side", type=int, default=DEFAULT_SPLIT.min_image_side,
                        help="smaller images are skipped, as in ingestion (default "
                             f"{DEFAULT_SPLIT.min_image_side})")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_SPLIT.max_image_pixels,
                        help="images declaring more pixels are skipped without decoding")
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_SPLIT.max_file_bytes,
                        help="larger files are skipped without reading them")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command.

    Args:
      argv: the command line (default sys.argv[1:]).

    Returns:
      0, or 2 for a bad flag, model or source (one line on standard error).
    """
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    problems = range_problems({k: getattr(args, k) for k in (
        "batch_size", "min_image_side", "max_image_pixels", "max_file_bytes")})
    if problems:
        parser.error("; ".join(problems))
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")
    from predict.run import predict_images  # TensorFlow and Beam load after the flags

    settings = SplitSettings(min_image_side=args.min_image_side,
                             max_image_pixels=args.max_image_pixels,
                             max_file_bytes=args.max_file_bytes)
    try:
        result = predict_images(args.model, args.source, args.output_dir, settings,
                                args.batch_size, beam_args or None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"classified {result.rows} images with {result.version_dir} "
          f"(classes: {', '.join(result.classes)})")
    skipped = sum(result.skipped.values())
    print(f"skipped {skipped}" + (": " + ", ".join(
        f"{reason} {n}" for reason, n in result.skipped.most_common()) if skipped else ""))
    print(f"rows: {result.outputs['csv']}, {result.outputs['jsonl']}; "
          f"skipped: {result.outputs['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
