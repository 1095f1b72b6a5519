"""What the Trainer needs of a run's configuration, as a typed value.

The pipeline passes these knobs as plain JSON in the Trainer's custom_config; their defaults
and help live in one place, the pipeline's config (pipeline/config.py), so none are set here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainingConfig:
    """The model, training and export knobs of a run."""

    base_weights: str
    alpha: float
    image_size: int
    dropout: float
    rotation: float
    horizontal_flip: bool
    batch_size: int
    cache_features: bool  # phase 1 on base features computed once (trainer.feature_cache)
    mirror_features: bool  # the feature cache also holds each training image's mirror
    epochs: int
    learning_rate: float
    patience: int  # 0: every epoch runs, the last is kept; else early stopping, best kept
    fine_tune_epochs: int
    fine_tune_at: int
    fine_tune_lr_factor: float
    shuffle_buffer: int
    seed: int
    model_name: str  # carried by the warmup requests written at export
    on_device: bool  # also write the TFLite models (trainer.tflite_export)

    @classmethod
    def field_names(cls) -> list[str]:
        """The knob names, in declaration order (the keys of `to_dict`).

        Returns:
          The field names.
        """
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        """The config from custom_config's JSON.

        Args:
          values: every knob by name; unknown keys are an error.

        Returns:
          The TrainingConfig.

        Raises:
          ValueError: `values` has keys that are not knobs.
        """
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown training knobs: {unknown}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The knobs as JSON-serialisable values.

        Returns:
          Every knob by name.
        """
        return dataclasses.asdict(self)
