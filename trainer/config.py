"""What the Trainer needs of a run's configuration, as a typed value.

The pipeline passes these knobs as plain JSON in the Trainer's custom_config. They are the
training part of the knob table (contract/knobs.py, TrainingKnobs), which holds each one's
type, default, help and range; none are declared here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from contract.knobs import TrainingKnobs


@dataclass(frozen=True)
class TrainingConfig(TrainingKnobs):
    """The model and training knobs of a run."""

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
          values: every knob by name; unknown or missing keys are an error.

        Returns:
          The TrainingConfig.

        Raises:
          ValueError: `values` has keys that are not knobs, or lacks some.
        """
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown training knobs: {unknown}")
        missing = [name for name in cls.field_names() if name not in values]
        if missing:
            raise ValueError(f"missing training knobs: {missing}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The knobs as JSON-serialisable values.

        Returns:
          Every knob by name.
        """
        return dataclasses.asdict(self)
