"""Run the pipeline locally (LocalDagRunner): images -> TFRecords -> ... -> TF Serving dir.

    tfx-image-transfer --data-dir ../shared/data/cats_vs_dogs \
        --base-weights ../shared/weights/<file>.h5 --alpha 0.5

(`python pipeline/run_local.py`, as in TFX's examples, is the same command.)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time

from pipeline.config import (
    ConfigError,
    PipelineConfig,
    absolute,
    add_flags,
    check_readable_dir,
    check_writable_dir,
    config_from_args,
)


def parse_args(argv: list[str] | None = None) -> PipelineConfig:
    """Flags (one per config knob) -> PipelineConfig.

    Args:
      argv: the arguments after the program name (default: sys.argv[1:]).

    Returns:
      The config, output and serving dirs made absolute. Bad flags or values exit with a
      usage error (status 2).
    """
    parser = argparse.ArgumentParser(
        prog="tfx-image-transfer",
        description="Train, evaluate and push an image classifier with TFX, locally.")
    add_flags(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(
            args, output_dir=absolute(args.output_dir),
            serving_dir=absolute(args.serving_dir) if args.serving_dir else None,
            predict_dir=absolute(args.predict_dir) if args.predict_dir else None)
        check_writable_dir(cfg.output_dir, "--output-dir")
        if cfg.predict_dir:
            check_readable_dir(cfg.predict_dir, "--predict-dir")
        if cfg.serving_dir:
            check_writable_dir(cfg.serving_dir, "--serving-dir")
    except ValueError as e:
        parser.error(str(e))
    return cfg


# Warnings TFX 1.21 and TFMA print on every run that say nothing about this run.
_KNOWN_NOISE = ("ArtifactQuery.property_predicate is not supported",
                "Fallback to non-ZetaSQL contexts execution query",
                "SavedModel saved prior to TF 2.5 detected when loading Keras model")


class _ProgressOnly(logging.Filter):
    """Keeps TFX's component start/finish lines and real warnings; drops proto dumps."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to log the record: warnings and component lines, minus known noise."""
        message = str(record.msg)
        if message.startswith(_KNOWN_NOISE) or "tf_record_iterator" in message:
            return False
        return record.levelno >= logging.WARNING or message.startswith("Component ")


def configure_logging() -> None:
    """Progress lines (ingestion, components, training) without TFX's proto dumps."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    for name in ("ingestion", "trainer"):
        logging.getLogger(name).setLevel(logging.INFO)
    absl_logger = logging.getLogger("absl")
    absl_logger.setLevel(logging.INFO)
    for logger in (absl_logger, logging.getLogger("tensorflow")):
        logger.addFilter(_ProgressOnly())


def run(cfg: PipelineConfig) -> dict:
    """Ingests, runs the pipeline with LocalDagRunner and returns the run summary.

    Args:
      cfg: the run's config.

    Returns:
      The summary (collect_summary) with "error": None, or one line naming the component
      that failed ("Trainer failed: <Type>: <message>", describe_failure).
    """
    from tfx import v1 as tfx

    from components.served_baseline import check_baseline
    from ingestion.beam_options import beam_pipeline_args
    from pipeline.data_source import ingest, resolve_data_dir
    from pipeline.definition import create_pipeline
    from pipeline.summary import collect_summary, describe_failure
    from trainer.model import build_base

    started = time.monotonic()
    # Fail before any work if the data or the base weights cannot be had (offline downloads,
    # bad paths); downloads land in Keras' cache, where ingestion and the Trainer find them.
    cfg = dataclasses.replace(cfg, data_dir=resolve_data_dir(cfg.data_dir))
    base = build_base(cfg.image_size, cfg.alpha, cfg.base_weights)
    if cfg.fine_tune_epochs and cfg.fine_tune_at >= len(base.layers):
        raise ConfigError(f"--fine-tune-at {cfg.fine_tune_at} would unfreeze nothing: the base "
                          f"has {len(base.layers)} layers")
    beam_args = beam_pipeline_args(cfg.beam_workers)
    ingested = ingest(cfg, beam_args)
    if cfg.compare_to_baseline:  # refuse an unusable serving dir before the pipeline runs
        check_baseline(cfg.serving_model_dir, ingested.report["classes"], cfg.allow_no_baseline)

    pipeline = create_pipeline(cfg, ingested.output_dir, ingested.report["classes"],
                               metadata_path=cfg.metadata_path, beam_pipeline_args=beam_args)
    error = None
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except Exception as e:  # the summary still reports what ran; the error is re-raised below
        error = e
    summary = collect_summary(cfg, ingested, time.monotonic() - started)
    summary["error"] = None if error is None else describe_failure(error, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Runs the pipeline locally, prints the run summary and writes run_summary.json.

    Args:
      argv: the arguments after the program name (default: sys.argv[1:]).

    Returns:
      The exit status: 0 on success, 1 if the pipeline failed, 2 if the data, its conversion
      or the base weights cannot be had, or the serving dir offers no usable baseline.
    """
    cfg = parse_args(argv)
    configure_logging()
    from components.served_baseline import BaselineError
    from ingestion.convert import IngestError
    from pipeline.data_source import DataSourceError
    from pipeline.summary import format_summary, write_summary
    from trainer.model import WeightsError

    try:
        summary = run(cfg)
    except (ConfigError, IngestError, DataSourceError, WeightsError, BaselineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"summary: {write_summary(cfg, summary)}")
    if summary["error"]:
        print(f"error: {summary['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
