"""Where the images come from: a given folder, or the seed's archive downloaded into a cache."""

from __future__ import annotations

import os

from pipeline.config import SEED_DATA_URL


class DataSourceError(RuntimeError):
    """No image folder was given and the seed's archive cannot be downloaded."""


def resolve_data_dir(data_dir: str | None, cache_dir: str | None = None) -> str:
    """data_dir itself, or the extracted cats_and_dogs_filtered folder (downloaded once)."""
    if data_dir:
        return data_dir
    import keras

    try:
        archive = keras.utils.get_file("cats_and_dogs_filtered.zip", origin=SEED_DATA_URL,
                                       extract=True, cache_dir=cache_dir)
    except Exception as e:  # urllib, HTTP and OS errors all mean "could not get it"
        raise DataSourceError(
            f"could not download the seed data set from {SEED_DATA_URL} ({e}). Without network "
            "access pass --data-dir with an image folder: root/train/<class>/ + "
            "root/validation/<class>/, or root/<class>/.") from e
    # Keras 3 extracts next to the archive into '<name>_extracted/'.
    for candidate in (archive, os.path.join(archive, "cats_and_dogs_filtered"),
                      archive.removesuffix(".zip")):
        if os.path.isdir(os.path.join(candidate, "train")):
            return candidate
    raise DataSourceError(f"downloaded {archive} but found no train/ folder in it")
