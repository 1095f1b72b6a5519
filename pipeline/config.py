"""The one configuration of a run: the knob table (contract/knobs.py) with the run's checks,
the locations derived from it, and the command-line flags made from it.

Both runners build a `PipelineConfig` from the same flag definitions (`add_flags` /
`config_from_args`), so no knob is declared twice. `--recipe tutorial` swaps in the tutorial's
values for the knobs it sets (RECIPES); flags given explicitly still win.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from contract.knobs import (
    DEFAULT_RECIPE,
    RECIPES,
    SECTIONS,
    Knobs,
    flag_name,
    knob_types,
    range_problems,
    row,
    sections,
)
from trainer.config import TrainingConfig

TUTORIAL_DATA_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
# The one TF Serving image: serving/docker-compose.yml serves with it, and the Kubeflow serving
# check (run_kubeflow.py --serving-check kubernetes) validates with it. Its version is the
# tensorflow-serving-api client's in the lock file.
TF_SERVING_IMAGE = "tensorflow/serving:2.19.1"
# What blesses a model as servable before the push (both give the Pusher an InfraBlessing):
SESSION_CHECK = "session"  # ServingCheck: TF Serving's session loader, in the component
KUBERNETES_CHECK = "kubernetes"  # TFX's InfraValidator: TF_SERVING_IMAGE in a pod (Kubeflow)
SERVING_CHECKS = (SESSION_CHECK, KUBERNETES_CHECK)


class ConfigError(ValueError):
    """A configuration that only shows as wrong once the model is known (e.g. --fine-tune-at)."""


@dataclass(frozen=True)
class PipelineConfig(Knobs):
    """Every knob of a run (the fields of contract.knobs.Knobs, with their types, defaults and
    help), checked when made."""

    @classmethod
    def for_recipe(cls, recipe: str, **values: Any) -> PipelineConfig:
        """The config of a recipe: its knob values (RECIPES), then `values` over them.

        Args:
          recipe: a name in RECIPES.
          **values: field values that win over the recipe's.

        Returns:
          The config.

        Raises:
          ValueError: an unknown recipe, or values that fail the range checks.
        """
        if recipe not in RECIPES:
            raise ValueError(f"invalid configuration: --recipe must be one of {sorted(RECIPES)}")
        return cls(recipe=recipe, **{**RECIPES[recipe], **values})

    def __post_init__(self) -> None:
        problems = range_problems({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if self.recipe not in RECIPES:
            problems.append(f"--recipe must be one of {sorted(RECIPES)}")
        if self.eval_fraction + self.test_fraction >= 1:
            problems.append("--eval-fraction + --test-fraction must leave images for training")
        if problems:
            raise ValueError("invalid configuration: " + "; ".join(problems))

    # Derived locations: one place decides the output layout.
    @property
    def pipeline_root(self) -> str:
        """Where TFX writes the components' artifacts.

        Returns:
          <output_dir>/pipeline_root.
        """
        return os.path.join(self.output_dir, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        """The local runner's ML Metadata store.

        Returns:
          <output_dir>/metadata.sqlite.
        """
        return os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def tfrecords_dir(self) -> str:
        """Where ingestion writes the converted TFRecords (one folder per conversion).

        Returns:
          <output_dir>/tfrecords.
        """
        return os.path.join(self.output_dir, "tfrecords")

    @property
    def serving_model_dir(self) -> str:
        """Where the Pusher writes: <serving_dir>/<model_name>/<version>/.

        Returns:
          <serving_dir>/<model_name>; serving_dir defaults to <output_dir>/serving.
        """
        return os.path.join(self.serving_dir or os.path.join(self.output_dir, "serving"),
                            self.model_name)

    def training_config(self) -> TrainingConfig:
        """The knobs the Trainer needs (passed to it as JSON in custom_config).

        Returns:
          A TrainingConfig with this config's values of its fields.
        """
        return TrainingConfig(**{k: getattr(self, k) for k in TrainingConfig.field_names()})


# Knobs some recipe sets: their flags default to "the recipe's value".
_RECIPE_KNOBS = frozenset(k for values in RECIPES.values() for k in values)


def check_writable_dir(path: str, flag: str) -> None:
    """Creates a local output directory and checks that files can be written in it.

    Args:
      path: the directory; remote URIs (gs://...) are left to the pipeline.
      flag: the flag that named it, for the message.

    Raises:
      ValueError: one line naming the flag, e.g. a file or a read-only place.
    """
    if "://" in path:
        return
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: {e.strerror or e}") from None


def check_readable_dir(path: str, flag: str) -> None:
    """Refuses, in one line, a location that is not a folder.

    Args:
      path: a local path or a tf.io.gfile URI.
      flag: the flag that named it, for the message.

    Raises:
      ValueError: the folder does not exist or cannot be listed.
    """
    import tensorflow as tf

    try:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.listdir(path)
            return
    except tf.errors.OpError as e:
        raise ValueError(f"{flag} {path} cannot be read: {e.message}") from None
    raise ValueError(f"{flag} {path} is not a folder")


def absolute(path: str) -> str:
    """Remote URIs unchanged, local paths absolute (artifact URIs and pods must not depend on
    the working directory).

    Args:
      path: a local path or a URI with a scheme (gs://, s3://, ...).

    Returns:
      The URI as it is, or the absolute path.
    """
    return path if "://" in path else os.path.abspath(path)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per knob (type, default, help and choices from the knob table).

    A knob that a recipe sets parses to None when not given, so that config_from_args can
    tell the recipe's value from an explicit flag.

    Args:
      parser: the parser to add them to, in --help sections; booleans get --x/--no-x.
    """
    groups = {name: parser.add_argument_group(name) for name in SECTIONS}
    types = knob_types(PipelineConfig)
    section = sections(PipelineConfig)
    # Section by section (the usage line lists the flags in the order they are added).
    for f in sorted(dataclasses.fields(PipelineConfig),
                    key=lambda f: SECTIONS.index(section[f.name])):
        knob = row(f)
        kwargs: dict[str, Any] = {"help": knob.help, "dest": f.name,
                                  "default": None if f.name in _RECIPE_KNOBS else f.default}
        if knob.choices:
            kwargs["choices"] = knob.choices
        if types[f.name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = types[f.name] if types[f.name] in (int, float) else str
        if f.default is not None:
            kwargs["help"] += _default_help(f)
        groups[section[f.name]].add_argument(flag_name(f.name), **kwargs)


def _default_help(f: dataclasses.Field) -> str:
    others = "".join(f"; --recipe {name}: {values[f.name]}" for name, values in RECIPES.items()
                     if f.name in values)
    return f" (default: {f.default}{others})"


def config_from_args(args: argparse.Namespace, **overrides: Any) -> PipelineConfig:
    """Builds the config from parsed flags (only the fields the parser defined): the recipe's
    knob values, then the flags given explicitly.

    Args:
      args: the parsed flags (add_flags); attributes that are no field are ignored.
      **overrides: field values that replace the flags' (e.g. absolute paths).

    Returns:
      The config.

    Raises:
      ValueError: the values fail PipelineConfig's checks.
    """
    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    values = {k: v for k, v in vars(args).items()
              if k in names and not (v is None and k in _RECIPE_KNOBS)}
    values.update(overrides)
    return PipelineConfig.for_recipe(values.pop("recipe", DEFAULT_RECIPE), **values)
