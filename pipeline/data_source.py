"""Where the images come from: a given folder, or the tutorial's archive downloaded into a cache."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipeline.config import TUTORIAL_DATA_URL, PipelineConfig

if TYPE_CHECKING:
    from ingestion.convert import IngestResult


class DataSourceError(RuntimeError):
    """No image folder was given and the tutorial's archive cannot be downloaded."""


def resolve_data_dir(data_dir: str | None, cache_dir: str | None = None) -> str:
    """data_dir itself, or the extracted cats_and_dogs_filtered folder (downloaded once).

    Args:
      data_dir: the image folder, or None for the tutorial's archive.
      cache_dir: where Keras caches the download (default: Keras' cache, ~/.keras).

    Returns:
      data_dir, or the extracted folder (the one holding train/).

    Raises:
      DataSourceError: the archive cannot be downloaded, or holds no train/ folder.
    """
    if data_dir:
        return data_dir
    import keras

    try:
        archive = keras.utils.get_file("cats_and_dogs_filtered.zip", origin=TUTORIAL_DATA_URL,
                                       extract=True, cache_dir=cache_dir)
    except Exception as e:  # urllib, HTTP and OS errors all mean "could not get it"
        raise DataSourceError(
            f"could not download the tutorial data set from {TUTORIAL_DATA_URL} ({e}). Without "
            "network access pass --data-dir with an image folder: root/train/<class>/ + "
            "root/validation/<class>/, or root/<class>/.") from e
    # Keras 3 extracts next to the archive into '<name>_extracted/'.
    for candidate in (archive, os.path.join(archive, "cats_and_dogs_filtered"),
                      archive.removesuffix(".zip")):
        if os.path.isdir(os.path.join(candidate, "train")):
            return candidate
    raise DataSourceError(f"downloaded {archive} but found no train/ folder in it")


def ingest(cfg: PipelineConfig, beam_args: list[str]) -> IngestResult:
    """The runners' first step: cfg.data_dir (or the tutorial download) -> TFRecords in
    cfg.tfrecords_dir, reusing an unchanged earlier conversion; prints one line.

    Args:
      cfg: the run's config (data_dir, tfrecords_dir and the split settings).
      beam_args: Beam pipeline options for the conversion job.

    Returns:
      The conversion's result: output_dir, whether it was reused, its report and seconds.
    """
    from ingestion.convert import SplitSettings, convert_image_tree, summarize

    result = convert_image_tree(resolve_data_dir(cfg.data_dir), cfg.tfrecords_dir,
                                SplitSettings.from_config(cfg), beam_args)
    print(f"[ingest] {'reused' if result.reused else 'converted'} {result.output_dir}: "
          f"{summarize(result.report)}", flush=True)
    return result
