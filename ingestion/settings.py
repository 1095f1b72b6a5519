"""Ingestion's settings, in a module without Beam or TensorFlow so that flag parsing is light."""

from __future__ import annotations

from dataclasses import dataclass, fields

from contract.knobs import IngestionKnobs


@dataclass(frozen=True)
class SplitSettings(IngestionKnobs):
    """How files are accepted and kept images assigned to splits (part of the fingerprint):
    the ingestion knobs, with their defaults, of the table in contract/knobs.py."""

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
