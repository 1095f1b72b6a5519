"""The no-regression gate's baseline: the model the serving dir serves now.

TFX's usual baseline, a `LatestBlessedModelStrategy` resolver, reads this pipeline's own ML
Metadata, so a run with a new output dir (a new metadata store) but the same serving dir has no
baseline and can push a worse model over a better one. `ServedBaseline` reads the serving dir
itself, when the run reaches it: the highest complete version there (what TF Serving's default
"latest" policy serves; an incomplete newer folder is not loadable, so the previous version
stays served) is copied into a standard Model artifact (`<uri>/Format-Serving`, where TFX's
`path_utils.serving_model_path` and the Evaluator look), and the Evaluator compares the
candidate with it. It runs in the component, so the same pipeline works on Kubeflow, where the
serving dir is remote and a compiled spec may run long after it was compiled.

A serving dir that holds versions none of which can be a baseline (no complete SavedModel, no
`from_examples` signature, or other classes than the candidate's) stops the run with
`BaselineError` unless `allow_no_baseline` is set. With nothing to compare against (nothing
served yet, or allowed), the Model artifact is left empty and marked so, and the Evaluator
(components/run_knobs.py, whose executor drops such a baseline) gates on the value threshold
alone, as TFX does without a baseline.

No `from __future__ import annotations` here: TFX reads the component signature's annotations.
"""

import dataclasses
import logging
import os
from typing import Any

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_component_specs
from tfx.types.standard_artifacts import Model
from tfx.utils import io_utils, path_utils

from contract import artifacts
from contract.artifacts import SAVED_MODEL_FILE
from contract.interface import EXAMPLES_SIGNATURE, LABELS_ASSET, SAVED_MODEL_TAG
from contract.labels import parse_labels

LOG = logging.getLogger("components.served_baseline")

VARIABLES_INDEX = os.path.join("variables", "variables.index")
# Custom properties of the baseline Model artifact.
SERVED_VERSION_KEY = "served_version"  # "" when there is no baseline
SERVED_PATH_KEY = "served_path"
NOTE_KEY = "note"  # why there is no baseline
ALLOW_FLAG = "--allow-no-baseline"


class BaselineError(RuntimeError):
    """The serving dir holds versions, but none can be the no-regression gate's baseline."""


@dataclasses.dataclass(frozen=True)
class BaselineChoice:
    """What the serving dir offers as a baseline.

    version and path name the served version (None if none); problem says why the versions
    there cannot be a baseline (None when they can, or when there are none).
    """

    version: str | None
    path: str | None
    problem: str | None

    @property
    def note(self) -> str:
        """One line for the summary: the baseline, or why there is none."""
        if self.version:
            return f"served version {self.version} ({self.path})"
        return self.problem or "nothing served yet"


def version_names(base_directory: str) -> list[str]:
    """The version folders under a model base path, as TF Serving finds them (int64 names).

    Args:
      base_directory: <serving dir>/<model name> (local or a tf.io.gfile URI).

    Returns:
      The names, highest version first; hidden staging folders (.incoming-*) are not versions.
    """
    if not tf.io.gfile.isdir(base_directory):
        return []
    return artifacts.version_names(tf.io.gfile.listdir(base_directory))


def is_complete(version_dir: str) -> bool:
    """Whether a version folder holds a whole SavedModel: the graph and the variables index
    (the Pusher writes them last, or renames the whole folder into place).

    Args:
      version_dir: a version folder.

    Returns:
      True if saved_model.pb and variables/variables.index are both there.
    """
    return all(tf.io.gfile.exists(os.path.join(version_dir, f))
               for f in (SAVED_MODEL_FILE, VARIABLES_INDEX))


def _unusable(version_dir: str, class_names: list[str]) -> str | None:
    """Why a complete version cannot be compared with the candidate, or None."""
    saved_model = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(os.path.join(version_dir, SAVED_MODEL_FILE), "rb") as f:
            saved_model.ParseFromString(f.read())
    except Exception as e:  # a corrupt graph file: DecodeError, or an I/O error
        return f"its {SAVED_MODEL_FILE} cannot be read ({type(e).__name__})"
    signatures = {name for graph in saved_model.meta_graphs
                  if SAVED_MODEL_TAG in graph.meta_info_def.tags
                  for name in graph.signature_def}
    if EXAMPLES_SIGNATURE not in signatures:
        return f"it has no {EXAMPLES_SIGNATURE!r} signature (the Evaluator's input)"
    labels = os.path.join(version_dir, "assets", LABELS_ASSET)
    if not tf.io.gfile.exists(labels):
        return f"it has no assets/{LABELS_ASSET}"
    with tf.io.gfile.GFile(labels) as f:
        served = parse_labels(f.read())
    if served != list(class_names):
        return f"it classifies {served}, this run {list(class_names)}"
    return None


def choose_baseline(base_directory: str, class_names: list[str]) -> BaselineChoice:
    """The highest complete version under base_directory, if it can be a baseline.

    Args:
      base_directory: <serving dir>/<model name>.
      class_names: the candidate's classes, by label index.

    Returns:
      The choice: a version, or no version with the problem (None if nothing is served).
    """
    names = version_names(base_directory)
    if not names:
        return BaselineChoice(None, None, None)
    complete = [n for n in names if is_complete(os.path.join(base_directory, n))]
    if not complete:
        return BaselineChoice(None, None, (
            f"{base_directory} holds version(s) {', '.join(names)} but no complete SavedModel "
            f"({SAVED_MODEL_FILE} and {VARIABLES_INDEX})"))
    path = os.path.join(base_directory, complete[0])
    problem = _unusable(path, class_names)
    if problem:
        return BaselineChoice(None, None, f"the served version {path} cannot be a baseline: "
                                          f"{problem}")
    return BaselineChoice(complete[0], path, None)


def check_baseline(base_directory: str, class_names: list[str],
                   allow_no_baseline: bool) -> BaselineChoice:
    """choose_baseline, refusing an unusable serving dir unless allowed.

    Args:
      base_directory: <serving dir>/<model name>.
      class_names: the candidate's classes.
      allow_no_baseline: run without a baseline when the versions there cannot be one.

    Returns:
      The choice.

    Raises:
      BaselineError: one line naming the problem and the flag that overrides it.
    """
    choice = choose_baseline(base_directory, class_names)
    if choice.problem and not allow_no_baseline:
        raise BaselineError(f"no-regression gate: {choice.problem}; refusing to push without "
                            f"a baseline ({ALLOW_FLAG} gates on --min-accuracy alone)")
    return choice


def served_snapshot(base_directory: str) -> str:
    """The version folders under a local base path and their times, for the cache key.

    TFX caches a component whose inputs and parameters are unchanged; this parameter changes
    when the serving dir does, so a rerun looks at the serving dir again. Remote paths give ""
    (read at run time only: there the component reruns with every new candidate model).

    Args:
      base_directory: <serving dir>/<model name>.

    Returns:
      "name@mtime_ns,..." for the version folders, or "".
    """
    if "://" in base_directory:
        return ""
    entries = []
    for name in version_names(base_directory):
        try:
            entries.append(f"{name}@{os.stat(os.path.join(base_directory, name)).st_mtime_ns}")
        except OSError:  # removed meanwhile
            continue
    return ",".join(entries)


@component
def ServedBaseline(  # noqa: N802 (TFX component names are classes)
    model: InputArtifact[Model],
    baseline: OutputArtifact[Model],
    serving_model_dir: Parameter[str],
    allow_no_baseline: Parameter[int] = 0,
    snapshot: Parameter[str] = "",
) -> None:
    """Copies the served version into a Model artifact for the Evaluator's baseline_model.

    Args:
      model: the candidate (its classes must match the baseline's).
      baseline: the Model artifact: the served version under Format-Serving, or empty with
        served_version "" and a note.
      serving_model_dir: <serving dir>/<model name>, the Pusher's destination.
      allow_no_baseline: 1 to go on without a baseline when the versions there are unusable.
      snapshot: served_snapshot at pipeline construction; it only enters the cache key.

    Raises:
      BaselineError: unusable versions and allow_no_baseline is 0.
    """
    del snapshot  # the cache key's business only
    candidate = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    with tf.io.gfile.GFile(os.path.join(candidate, "assets", LABELS_ASSET)) as f:
        class_names = parse_labels(f.read())
    choice = check_baseline(serving_model_dir, class_names, bool(allow_no_baseline))
    if choice.version:
        io_utils.copy_dir(choice.path, path_utils.serving_model_dir(baseline.uri))
    else:
        LOG.warning("No baseline for the no-regression gate: %s", choice.note)
    baseline.set_string_custom_property(SERVED_VERSION_KEY, choice.version or "")
    baseline.set_string_custom_property(SERVED_PATH_KEY, choice.path or "")
    baseline.set_string_custom_property(NOTE_KEY, choice.note)


def baseline_entry(props: Any) -> dict[str, Any]:
    """The summary's baseline entry from the baseline artifact's MLMD custom properties.

    Args:
      props: the MLMD artifact's custom_properties.

    Returns:
      {"version": str | None, "path": str | None, "note": str}.
    """
    def text(key: str) -> str:
        return props[key].string_value if key in props else ""

    return {"version": text(SERVED_VERSION_KEY) or None, "path": text(SERVED_PATH_KEY) or None,
            "note": text(NOTE_KEY)}


def has_baseline(artifact: types.Artifact) -> bool:
    """Whether a ServedBaseline artifact holds a model (served_version set).

    Args:
      artifact: the baseline Model artifact.

    Returns:
      False for the empty artifact ServedBaseline writes when there is nothing to compare.
    """
    return bool(artifact.get_string_custom_property(SERVED_VERSION_KEY))


class ServedBaselineEvaluatorExecutor(evaluator_executor.Executor):
    """TFX's Evaluator executor; an empty ServedBaseline artifact counts as no baseline."""

    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        """Evaluates as TFX does, without the baseline when ServedBaseline found none."""
        key = standard_component_specs.BASELINE_MODEL_KEY
        if input_dict.get(key) and not has_baseline(input_dict[key][0]):
            input_dict = {k: v for k, v in input_dict.items() if k != key}
        super().Do(input_dict, output_dict, exec_properties)
