"""The one table of a run's knobs.

A row is a dataclass field: its name is the knob's (the flag is --fine-tune-at for
fine_tune_at), its annotation the knob's type, and `knob(...)` the rest of its row: default,
help, valid range, the tutorial recipe's value, whether a Kubeflow run may set it, and its
--help section. The table is `Knobs`, made of the parts other packages read as typed values:
ingestion's settings (`IngestionKnobs`, ingestion.settings.SplitSettings), the Trainer's config
(`TrainingKnobs`, trainer.config.TrainingConfig) and the Evaluator's accuracy gate (`GateKnobs`).

Everything else derives from it: the pipeline's config and flags (pipeline/config.py), RECIPES,
the range checks (RANGES) on the flags and, when the Trainer and Evaluator run
(components/run_knobs.py), on the values a Kubeflow run set, and the Kubeflow runtime
parameters (TRAINER_KNOBS, GATE_KNOBS). Adding a knob is adding a row.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from contract.image_header import DEFAULT_MAX_IMAGE_PIXELS
from contract.interface import MODEL_NAME

DEFAULT_RECIPE = "default"  # the knobs' defaults
TUTORIAL_RECIPE = "tutorial"  # TensorFlow's "Transfer learning and fine-tuning" as written
_NOT_SET = object()


class Rule(NamedTuple):
    """A knob's valid range: the rule as users read it ("must be >= 1"), and its check."""

    text: str
    check: Callable[[Any], bool]


@dataclass(frozen=True)
class Knob:
    """A row of the table besides the field's name, type and default."""

    help: str
    rule: Rule | None = None
    tutorial: Any = _NOT_SET  # the tutorial recipe's value, where it differs from the default
    per_run: bool = False  # a Kubeflow run may set it (a runtime parameter)
    section: str | None = None  # the --help section this row starts (see `sections`)
    choices: tuple[str, ...] | None = None


def knob(default: Any, help: str, *, rule: Rule | None = None, tutorial: Any = _NOT_SET,
         per_run: bool = False, section: str | None = None,
         choices: tuple[str, ...] | None = None) -> Any:
    """A row of the table: a dataclass field carrying the rest of the knob's facts.

    Args:
      default: the default recipe's value.
      help: the flag's help.
      rule: the valid range; checked on the flags and, for per_run knobs, when the component
        runs.
      tutorial: the tutorial recipe's value, where it differs from the default.
      per_run: a Kubeflow run may set it: a typed runtime parameter of the compiled pipeline
        (int and float knobs of TrainingKnobs and GateKnobs only).
      section: starts this --help section (one of SECTIONS); the rows after it are in it
        too, up to the next row that names one.
      choices: the only values the flag takes.

    Returns:
      The field.
    """
    row = Knob(help, rule, tutorial, per_run, section, choices)
    return field(default=default, metadata={"knob": row})


def row(f: dataclasses.Field) -> Knob:
    """The table's row of a knob's field.

    Args:
      f: a field of Knobs or of a class built on it.

    Returns:
      Its Knob.
    """
    return f.metadata["knob"]


def knob_types(cls: type) -> dict[str, type]:
    """Each knob's type (its annotation, resolved), in table order.

    Args:
      cls: Knobs, one of its parts, or a class built on one.

    Returns:
      knob name -> type, e.g. int, float, bool, str or str | None.
    """
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _at_least(low: int) -> Rule:
    return Rule(f"must be >= {low}", lambda v: v >= low)


_FRACTION = Rule("must be in [0, 1)", lambda v: 0 <= v < 1)
_UNIT = Rule("must be in [0, 1]", lambda v: 0 <= v <= 1)


@dataclass(frozen=True)
class IngestionKnobs:
    """How files are accepted and kept images assigned to splits (ingestion.settings)."""

    eval_fraction: float = knob(
        0.1, "Class-folder layout: fraction of images in the eval split (hash split).",
        rule=_FRACTION, section="ingestion")
    test_fraction: float = knob(
        0.1, "Class-folder layout: fraction of images in the test split (hash split).",
        rule=_FRACTION)
    # The tutorial moves 20% of validation/ to test.
    validation_test_fraction: float = knob(
        0.2, "train/validation layout: fraction of the validation folder moved to the test "
        "split.", rule=Rule("must be in (0, 1)", lambda v: 0 < v < 1))
    min_image_side: int = knob(32, "Images with a side shorter than this are skipped.",
                               rule=_at_least(1))
    # A fixed count makes Beam group every serialized example first, which grows memory with
    # the data (benchmarks/).
    num_shards: int = knob(
        0, "TFRecord shards per split; 0 lets the Beam runner pick them and stream the examples "
        "(a fixed count holds every example of a split in memory to shard it).",
        rule=Rule("must be in [0, 1000] (0: the runner picks)", lambda v: 0 <= v <= 1000))
    # Read from the header (all frames of a GIF), see contract/image_header.py.
    max_image_pixels: int = knob(
        DEFAULT_MAX_IMAGE_PIXELS,
        "Images with more pixels (width x height, read from the header) are skipped undecoded.",
        rule=_at_least(1))
    # Photos are a few MB; 64 MiB is generous.
    max_file_bytes: int = knob(64 * 1024 * 1024, "Larger files are skipped without being read.",
                               rule=_at_least(1))


@dataclass(frozen=True)
class TrainingKnobs:
    """The model and training knobs: what the Trainer reads (trainer.config)."""

    base_weights: str = knob(
        "imagenet", "MobileNetV2 base weights: imagenet (Keras download), a local .h5 path, or "
        "none.", section="model")
    alpha: float = knob(
        1.0, "MobileNetV2 width multiplier (must match the weights file).",
        rule=Rule("must be in (0, 1.4] (MobileNetV2's widths)", lambda v: 0 < v <= 1.4))
    # 224: the resolution the shipped ImageNet weights were trained at (keras.applications').
    image_size: int = knob(
        224, "Square input size in pixels (serving resizes any image to it).", tutorial=160,
        rule=Rule("must be in [32, 1024] pixels (MobileNetV2 needs >= 32)",
                  lambda v: 32 <= v <= 1024))
    dropout: float = knob(0.2, "Dropout rate before the classification layer.", rule=_FRACTION)
    rotation: float = knob(
        0.2, "RandomRotation factor for augmentation (0 = off); with --cache-features the "
        "training sees fixed views instead (see --mirror-features).",
        rule=Rule("must be in [0, 1] (a fraction of a full turn)", lambda v: 0 <= v <= 1))
    horizontal_flip: bool = knob(
        True, "Random horizontal flips for augmentation; with --cache-features, fixed views.")
    batch_size: int = knob(32, "Batch size.",
                           rule=Rule("must be in [1, 4096]", lambda v: 1 <= v <= 4096),
                           per_run=True, section="training")
    cache_features: bool = knob(
        True, "Phase 1 trains the head on base features computed once per image instead of "
        "running the frozen base every epoch; the same pass caches the activations below "
        "--fine-tune-at, on which phase 2 trains the base's top (in memory within 2 GiB, "
        "else in a temporary file).", tutorial=False)
    mirror_features: bool = knob(
        False, "With --cache-features, also cache each training image's mirror image for both "
        "phases (one more base pass per image; measured no better on cats vs dogs).")
    epochs: int = knob(200, "Phase 1 (frozen base) epochs: the most, with --patience.",
                       rule=_at_least(1), tutorial=10, per_run=True)
    learning_rate: float = knob(1e-3, "Phase 1 Adam learning rate.",
                                rule=Rule("must be in (0, 1]", lambda v: 0 < v <= 1),
                                tutorial=1e-4, per_run=True)
    patience: int = knob(
        10, "Each phase stops after this many epochs without a lower eval loss and keeps its "
        "best epoch (phase 2 keeps phase 1's weights if none beats them); 0 runs every epoch "
        "and keeps the last.", rule=_at_least(0), tutorial=0, per_run=True)
    fine_tune_epochs: int = knob(3, "Phase 2 (fine-tune) epochs: the most; 0 skips it.",
                                 rule=_at_least(0), tutorial=10, per_run=True)
    # 130: block 14's projection, blocks 15 and 16 and the final 1x1 convolution. On cached
    # activations it lowered the converged head's eval loss in 3 of 3 seeds where the
    # tutorial's layer 100 did in 2, at about a third of the cost per epoch (README,
    # "Fine-tuning").
    fine_tune_at: int = knob(130, "Phase 2 unfreezes base layers from this index.",
                             rule=_at_least(0), tutorial=100, per_run=True)
    # The tutorial fine-tunes at a tenth of the phase-1 learning rate.
    fine_tune_lr_factor: float = knob(
        0.01, "Phase 2 RMSprop learning rate = learning rate x this factor.",
        rule=Rule("must be in (0, 10]", lambda v: 0 < v <= 10), tutorial=0.1, per_run=True)
    shuffle_buffer: int = knob(1000, "Shuffle buffer size (examples).", rule=_at_least(1))
    seed: int = knob(42, "Random seed for shuffling, augmentation and initialisation.")
    on_device: bool = knob(
        True, "Also export TFLite models (float16 and int8, uint8 pixels in) and push each "
        "beside the SavedModel if its test accuracy is within --on-device-max-drop of the "
        "SavedModel's.")


@dataclass(frozen=True)
class GateKnobs:
    """The Evaluator's accuracy gate (components/run_knobs.py)."""

    min_accuracy: float = knob(0.90, "Blessing needs test accuracy >= this.", rule=_UNIT,
                               per_run=True, section="evaluation and push")
    max_accuracy_drop: float = knob(
        0.01, "Blessing fails if accuracy falls more than this below the served model's.",
        rule=_UNIT, per_run=True)


@dataclass(frozen=True)
class Knobs(GateKnobs, TrainingKnobs, IngestionKnobs):
    """Every knob of a run: its parts' (ingestion, training, gate) and the pipeline's own.
    Paths may be local or remote (gs://, s3://) where TFX allows."""

    data_dir: str | None = knob(
        None, "Image folder: root/train/<class>/ + root/validation/<class>/, or root/<class>/. "
        "Default: download the tutorial's cats_and_dogs_filtered archive into a cache.",
        section="data and outputs")
    output_dir: str = knob("outputs", "Pipeline root, ML metadata, TFRecords and serving dir.")
    pipeline_name: str = knob("tfx-image-transfer", "TFX pipeline name.")
    model_name: str = knob(MODEL_NAME, "Model name in the TF Serving directory.")
    serving_dir: str | None = knob(None, "TF Serving base directory (default OUTPUT_DIR/serving).")
    recipe: str = knob(
        DEFAULT_RECIPE,
        "default: the head trained to convergence on cached base features at 224 px, then a "
        "short fine-tune of the base's top on cached activations, keeping its best epoch; "
        "tutorial: the TensorFlow tutorial's recipe as "
        "written (160 px, 10 + 10 epochs, last epoch kept).",
        choices=(DEFAULT_RECIPE, TUTORIAL_RECIPE), section="ingestion")
    compare_to_baseline: bool = knob(
        True, "Gate on no regression against the model the serving dir serves now (its highest "
        "complete version of --model-name), whichever output dir pushed it.",
        section="evaluation and push")
    allow_no_baseline: bool = knob(
        False, "Run even if the serving dir holds versions none of which can be the baseline "
        "(incomplete, or other classes); the model is then gated on --min-accuracy alone.")
    # Half a point: one photo of a 200-photo test split.
    on_device_max_drop: float = knob(
        0.005, "An on-device model is pushed only if its test accuracy is at most this below "
        "the SavedModel's.", rule=_UNIT)
    predict_dir: str | None = knob(
        None, "A folder of unlabelled photos (any layout ingestion reads, or flat) that the "
        "run's model classifies after the push, as tfx-image-transfer-predict does; the report "
        "links the rows.")
    beam_workers: int = knob(1, "Beam in-memory workers for ingestion and TFX components.",
                             rule=Rule("must be in [1, 64]", lambda v: 1 <= v <= 64),
                             section="execution")
    enable_cache: bool = knob(True, "Reuse outputs of unchanged components (TFX caching).")


# --help shows the sections in this order.
SECTIONS = ("data and outputs", "ingestion", "model", "training", "evaluation and push",
            "execution")

# The knob values of each recipe that differ from the defaults (the default recipe's).
RECIPES: dict[str, dict[str, Any]] = {
    DEFAULT_RECIPE: {},
    TUTORIAL_RECIPE: {f.name: row(f).tutorial for f in dataclasses.fields(Knobs)
                      if row(f).tutorial is not _NOT_SET},
}

# knob -> its range, in table order.
RANGES: dict[str, Rule] = {f.name: row(f).rule for f in dataclasses.fields(Knobs)
                           if row(f).rule is not None}


def _per_run(part: type) -> dict[str, type]:
    per_run = {f.name for f in dataclasses.fields(part) if row(f).per_run}
    return {name: kind for name, kind in knob_types(part).items() if name in per_run}


# The knobs a Kubeflow run may set, by type: each is an exec property of its own of the Trainer
# (TrainingKnobs) or the Evaluator (GateKnobs), and a runtime parameter on Kubeflow.
TRAINER_KNOBS: dict[str, type] = _per_run(TrainingKnobs)
GATE_KNOBS: dict[str, type] = _per_run(GateKnobs)
PER_RUN_KNOBS: dict[str, type] = {**TRAINER_KNOBS, **GATE_KNOBS}


def sections(cls: type = Knobs) -> dict[str, str]:
    """Each knob's --help section: that of the nearest row at or above it (in table order,
    the order of this file) that names one.

    Args:
      cls: Knobs or a class built on it.

    Returns:
      knob name -> section, in table order.
    """
    found: dict[str, str] = {}
    current = None
    for f in dataclasses.fields(cls):
        current = row(f).section or current
        if current not in SECTIONS:
            raise ValueError(f"knob {f.name}: section {current!r} is none of {SECTIONS}")
        found[f.name] = current
    return found


def flag_name(knob: str) -> str:
    """The command-line flag of a knob.

    Args:
      knob: a config field name, e.g. fine_tune_at.

    Returns:
      The flag, e.g. --fine-tune-at.
    """
    return "--" + knob.replace("_", "-")


def range_problems(values: Mapping[str, Any], as_flags: bool = True) -> list[str]:
    """The values that break their knob's rule, as "<name> <rule>" phrases.

    Args:
      values: knob name -> value; knobs without a range are ignored.
      as_flags: name the knobs by their flags (--fine-tune-at); else by their own names
        (fine_tune_at), as runtime parameters are.

    Returns:
      One phrase per bad value, in table order; empty when all are valid.
    """
    return [f"{flag_name(k) if as_flags else k} {rule.text}" for k, rule in RANGES.items()
            if k in values and not rule.check(values[k])]


# TFMA computes accuracy in float32 (27 of 30 is 0.89999998) and compares it with the bounds in
# float64, so an accuracy exactly at the lower bound, or a drop exactly at the allowed one, would
# be refused. The bounds written into the eval config are widened by GATE_TOLERANCE: far less
# than one photo of any test split under a million photos.
GATE_TOLERANCE = 1e-6


def meets_min_accuracy(accuracy: float, min_accuracy: float) -> bool:
    """Whether accuracy (TFMA's, float32) meets --min-accuracy as the gate judges it."""
    return accuracy >= min_accuracy - GATE_TOLERANCE


def exceeds_max_drop(drop: float, max_accuracy_drop: float) -> bool:
    """Whether a drop below the baseline's accuracy is more than --max-accuracy-drop allows,
    as the gate judges it."""
    return drop > max_accuracy_drop + GATE_TOLERANCE
