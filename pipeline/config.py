"""The one configuration of a pipeline run: every knob, with the default recipe's values.

Both runners build a `PipelineConfig` from the same flag definitions (`add_flags` /
`config_from_args`), so no knob is declared twice. `--recipe tutorial` swaps in the tutorial's
values for the knobs it sets (RECIPES); flags given explicitly still win.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from contract.interface import MODEL_NAME
from contract.knobs import flag_name, range_problems
from ingestion.settings import DEFAULT_SPLIT
from trainer.config import TrainingConfig

# The TensorFlow "Transfer learning and fine-tuning" tutorial's recipe ("the tutorial recipe").
TUTORIAL_IMAGE_SIZE = 160
TUTORIAL_BATCH_SIZE = 32
TUTORIAL_LEARNING_RATE = 1e-4
TUTORIAL_EPOCHS = 10
TUTORIAL_FINE_TUNE_EPOCHS = 10
TUTORIAL_FINE_TUNE_AT = 100
TUTORIAL_FINE_TUNE_LR_FACTOR = 0.1  # fine-tune at a tenth of the phase-1 learning rate
TUTORIAL_DROPOUT = 0.2
TUTORIAL_ROTATION = 0.2
# The default recipe fine-tunes MobileNetV2 from layer 130 (block 14's projection, blocks 15
# and 16 and the final 1x1 convolution): on cached activations it lowered the converged head's
# eval loss in 3 of 3 seeds where the tutorial's layer 100 did in 2, at about a third of the
# cost per epoch (README, "Fine-tuning").
DEFAULT_FINE_TUNE_AT = 130
# The resolution the shipped ImageNet weights were trained at (keras.applications' files).
WEIGHTS_IMAGE_SIZE = 224
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


def _knob(default: Any, help: str, **flag: Any) -> Any:
    """A dataclass field that also describes its command-line flag."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass(frozen=True)
class PipelineConfig:
    """Every knob of a run. Paths may be local or remote (gs://, s3://) where TFX allows."""

    # Data and outputs
    data_dir: str | None = _knob(
        None,
        "Image folder: root/train/<class>/ + root/validation/<class>/, or root/<class>/. "
        "Default: download the tutorial's cats_and_dogs_filtered archive into a cache.",
    )
    output_dir: str = _knob("outputs", "Pipeline root, ML metadata, TFRecords and serving dir.")
    pipeline_name: str = _knob("tfx-image-transfer", "TFX pipeline name.")
    model_name: str = _knob(MODEL_NAME, "Model name in the TF Serving directory.")
    serving_dir: str | None = _knob(None, "TF Serving base directory (default OUTPUT_DIR/serving).")

    # Ingestion
    eval_fraction: float = _knob(
        DEFAULT_SPLIT.eval_fraction,
        "Class-folder layout: fraction of images in the eval split (hash split).",
    )
    test_fraction: float = _knob(
        DEFAULT_SPLIT.test_fraction,
        "Class-folder layout: fraction of images in the test split (hash split).",
    )
    validation_test_fraction: float = _knob(
        DEFAULT_SPLIT.validation_test_fraction,
        "train/validation layout: fraction of the validation folder moved to the test split.",
    )
    min_image_side: int = _knob(
        DEFAULT_SPLIT.min_image_side, "Images with a side shorter than this are skipped."
    )
    num_shards: int = _knob(
        DEFAULT_SPLIT.num_shards,
        "TFRecord shards per split; 0 lets the Beam runner pick them and stream the examples "
        "(a fixed count holds every example of a split in memory to shard it).")
    max_image_pixels: int = _knob(
        DEFAULT_SPLIT.max_image_pixels,
        "Images with more pixels (width x height, read from the header) are skipped undecoded.",
    )
    max_file_bytes: int = _knob(
        DEFAULT_SPLIT.max_file_bytes, "Larger files are skipped without being read."
    )

    recipe: str = _knob(
        "default",
        "default: the head trained to convergence on cached base features at 224 px, then a "
        "short fine-tune of the base's top on cached activations, keeping its best epoch; "
        "tutorial: the TensorFlow tutorial's recipe as "
        "written (160 px, 10 + 10 epochs, last epoch kept).",
        choices=("default", "tutorial"),
    )

    # Model
    base_weights: str = _knob(
        "imagenet",
        "MobileNetV2 base weights: imagenet (Keras download), a local .h5 path, or none.",
    )
    alpha: float = _knob(1.0, "MobileNetV2 width multiplier (must match the weights file).")
    image_size: int = _knob(
        WEIGHTS_IMAGE_SIZE,
        "Square input size in pixels (serving resizes any image to it).",
    )
    dropout: float = _knob(TUTORIAL_DROPOUT, "Dropout rate before the classification layer.")
    rotation: float = _knob(
        TUTORIAL_ROTATION,
        "RandomRotation factor for augmentation (0 = off); with --cache-features the training "
        "sees fixed views instead (see --mirror-features).")
    horizontal_flip: bool = _knob(
        True, "Random horizontal flips for augmentation; with --cache-features, fixed views.")

    # Training
    batch_size: int = _knob(TUTORIAL_BATCH_SIZE, "Batch size.")
    cache_features: bool = _knob(
        True,
        "Phase 1 trains the head on base features computed once per image instead of "
        "running the frozen base every epoch; the same pass caches the activations below "
        "--fine-tune-at, on which phase 2 trains the base's top (in memory within 2 GiB, "
        "else in a temporary file).",
    )
    mirror_features: bool = _knob(
        False,
        "With --cache-features, also cache each training image's mirror image for both phases "
        "(one more base pass per image; measured no better on cats vs dogs).",
    )
    epochs: int = _knob(200, "Phase 1 (frozen base) epochs: the most, with --patience.")
    learning_rate: float = _knob(1e-3, "Phase 1 Adam learning rate.")
    patience: int = _knob(
        10,
        "Each phase stops after this many epochs without a lower eval loss and keeps its "
        "best epoch (phase 2 keeps phase 1's weights if none beats them); 0 runs every epoch "
        "and keeps the last.",
    )
    fine_tune_epochs: int = _knob(3, "Phase 2 (fine-tune) epochs: the most; 0 skips it.")
    fine_tune_at: int = _knob(
        DEFAULT_FINE_TUNE_AT, "Phase 2 unfreezes base layers from this index."
    )
    fine_tune_lr_factor: float = _knob(
        0.01, "Phase 2 RMSprop learning rate = learning rate x this factor."
    )
    shuffle_buffer: int = _knob(1000, "Shuffle buffer size (examples).")
    seed: int = _knob(42, "Random seed for shuffling, augmentation and initialisation.")

    # Evaluation and push
    min_accuracy: float = _knob(0.90, "Blessing needs test accuracy >= this.")
    max_accuracy_drop: float = _knob(
        0.01, "Blessing fails if accuracy falls more than this below the served model's."
    )
    compare_to_baseline: bool = _knob(
        True,
        "Gate on no regression against the model the serving dir serves now (its highest "
        "complete version of --model-name), whichever output dir pushed it.",
    )
    allow_no_baseline: bool = _knob(
        False,
        "Run even if the serving dir holds versions none of which can be the baseline "
        "(incomplete, or other classes); the model is then gated on --min-accuracy alone.",
    )

    # On-device models
    on_device: bool = _knob(
        True,
        "Also export TFLite models (float16 and int8, uint8 pixels in) and push each beside "
        "the SavedModel if its test accuracy is within --on-device-max-drop of the "
        "SavedModel's.")
    on_device_max_drop: float = _knob(
        0.005, "An on-device model is pushed only if its test accuracy is at most this below "
        "the SavedModel's.")

    # Batch prediction
    predict_dir: str | None = _knob(
        None,
        "A folder of unlabelled photos (any layout ingestion reads, or flat) that the run's "
        "model classifies at the end, as tfx-image-transfer-predict does; the report links "
        "the rows.")

    # Execution
    beam_workers: int = _knob(1, "Beam in-memory workers for ingestion and TFX components.")
    enable_cache: bool = _knob(True, "Reuse outputs of unchanged components (TFX caching).")

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


# The knob values of each --recipe that differ from the field defaults (the default recipe's).
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    # The TensorFlow "Transfer learning and fine-tuning" tutorial, as written.
    "tutorial": {"image_size": TUTORIAL_IMAGE_SIZE, "cache_features": False,
                 "epochs": TUTORIAL_EPOCHS, "learning_rate": TUTORIAL_LEARNING_RATE,
                 "patience": 0, "fine_tune_epochs": TUTORIAL_FINE_TUNE_EPOCHS,
                 "fine_tune_at": TUTORIAL_FINE_TUNE_AT,
                 "fine_tune_lr_factor": TUTORIAL_FINE_TUNE_LR_FACTOR},
}
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


# --help sections: each starts at the named field (fields are in this order above).
_FLAG_GROUPS = {"data_dir": "data and outputs", "eval_fraction": "ingestion",
                "base_weights": "model", "batch_size": "training",
                "min_accuracy": "evaluation and push", "beam_workers": "execution"}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per PipelineConfig field (defaults and help from the dataclass).

    A knob that a recipe sets parses to None when not given, so that config_from_args can
    tell the recipe's value from an explicit flag.

    Args:
      parser: the parser to add them to, in --help sections; booleans get --x/--no-x.
    """
    group: Any = parser
    for f in dataclasses.fields(PipelineConfig):
        if f.name in _FLAG_GROUPS:
            group = parser.add_argument_group(_FLAG_GROUPS[f.name])
        kwargs: dict[str, Any] = {"help": f.metadata["help"], "dest": f.name,
                                  "default": None if f.name in _RECIPE_KNOBS else f.default}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _field_type(f)
        if f.default is not None:
            kwargs["help"] += _default_help(f)
        group.add_argument(flag_name(f.name), **kwargs)


def _default_help(f: dataclasses.Field) -> str:
    others = "".join(f"; --recipe {name}: {values[f.name]}" for name, values in RECIPES.items()
                     if f.name in values)
    return f" (default: {f.default}{others})"


def _field_type(f: dataclasses.Field) -> type:
    text = str(f.type)
    for t in (int, float):
        if text.startswith(t.__name__):
            return t
    return str


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
    return PipelineConfig.for_recipe(values.pop("recipe", "default"), **values)
