"""Ingestion's settings, in a module without Beam or TensorFlow so that flag parsing is light."""

from __future__ import annotations

from dataclasses import dataclass, fields

from contract.image_header import DEFAULT_MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class SplitSettings:
    """How files are accepted and kept images assigned to splits (part of the fingerprint).

    The defaults here are the only ones: the pipeline's flags take theirs from this class.
    """

    eval_fraction: float = 0.1
    test_fraction: float = 0.1
    validation_test_fraction: float = 0.2  # the tutorial recipe moves 20% of validation/ to test
    min_image_side: int = 32
    # 0: the runner picks the shards and streams the examples to them. A fixed count makes Beam
    # group every serialized example first, which grows memory with the data (benchmarks/).
    num_shards: int = 0
    # Images whose header declares more pixels (width x height; all frames of a GIF) are skipped
    # without decoding (see contract/image_header.py).
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    # Larger files are skipped without reading them (photos are a few MB; 64 MiB is generous).
    max_file_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_config(cls, cfg: object) -> SplitSettings:
        """The same-named fields of a PipelineConfig.

        Args:
          cfg: an object with an attribute per field of this class (a PipelineConfig).

        Returns:
          The SplitSettings.
        """
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


DEFAULT_SPLIT = SplitSettings()

# Two images whose perceptual hashes (64 bits, ingestion/near_duplicates.py) differ in at most
# this many bits are near-duplicates, kept in one split. A photo and its JPEG q95 re-encode
# differ in at most 2; the closest two different photos of cats_vs_dogs in 12.
NEAR_DUPLICATE_MAX_DISTANCE = 4
# A folder whose largest class has more than this many times the files of its smallest one
# gets a warning (logged before anything is written, and kept in the report).
IMBALANCE_WARNING_RATIO = 10
