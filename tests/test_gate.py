"""The no-regression gate's baseline: what the serving dir serves now (components/served_baseline).

The end-to-end case (a worse model from a new output dir is not pushed over the served one) is
in tests/test_pipeline.py, which shares its pipeline run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow.core.protobuf import saved_model_pb2

from components.served_baseline import (
    BaselineError,
    check_baseline,
    choose_baseline,
    served_snapshot,
    version_names,
)
from contract.interface import EXAMPLES_SIGNATURE, SAVED_MODEL_TAG, SERVING_SIGNATURE
from contract.labels import format_labels
from tests.conftest import MINI, run_local

CLASSES = ["cats", "dogs"]


def write_version(base: Path, version: str, classes: list[str] = CLASSES,
                  signatures: tuple[str, ...] = (SERVING_SIGNATURE, EXAMPLES_SIGNATURE),
                  graph: bool = True, index: bool = True) -> Path:
    """A version folder with the files the baseline check reads: a SavedModel proto with the
    given signatures (no real graph: only its signature map is read), the variables index and
    the labels asset."""
    path = base / version
    (path / "variables").mkdir(parents=True)
    (path / "assets").mkdir()
    (path / "assets" / "labels.txt").write_text(format_labels(classes))
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 64)
    if index:
        (path / "variables" / "variables.index").write_bytes(b"index")
    if graph:
        model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
        meta = model.meta_graphs.add()
        meta.meta_info_def.tags.append(SAVED_MODEL_TAG)
        for name in signatures:
            meta.signature_def[name].method_name = "tensorflow/serving/predict"
        (path / "saved_model.pb").write_bytes(model.SerializeToString())
    return path


def test_the_baseline_is_the_highest_complete_version(tmp_path):
    base = tmp_path / "image_classifier"
    assert choose_baseline(str(base), CLASSES).note == "nothing served yet"  # no folder at all
    write_version(base, "9")
    write_version(base, "10")
    write_version(base, "12", graph=False)  # a copy in progress: not servable, not the baseline
    (base / ".incoming-13-77").mkdir()  # the Pusher's staging folder is no version
    (base / "notes").mkdir()
    assert version_names(str(base)) == ["12", "10", "9"]  # numerically, not as text
    choice = choose_baseline(str(base), CLASSES)
    assert (choice.version, choice.path, choice.problem) == ("10", str(base / "10"), None)
    assert choice.note == f"served version 10 ({base / '10'})"
    assert served_snapshot(str(base)).startswith("12@")  # changes as the serving dir does
    assert served_snapshot("gs://bucket/serving/m") == ""  # read at run time only


@pytest.mark.parametrize("setup, problem", [
    (lambda b: write_version(b, "3", graph=False), "holds version(s) 3 but no complete"),
    (lambda b: write_version(b, "3", index=False), "holds version(s) 3 but no complete"),
    (lambda b: write_version(b, "3", classes=["cats", "dogs", "birds"]),
     "it classifies ['cats', 'dogs', 'birds'], this run ['cats', 'dogs']"),
    (lambda b: write_version(b, "3", signatures=(SERVING_SIGNATURE,)),
     "it has no 'from_examples' signature"),
    (lambda b: (write_version(b, "3") / "saved_model.pb").write_bytes(b"\xff" * 9),
     "its saved_model.pb cannot be read (DecodeError)"),
])
def test_versions_that_cannot_be_a_baseline_stop_the_run_unless_allowed(tmp_path, setup,
                                                                        problem):
    base = tmp_path / "image_classifier"
    setup(base)
    with pytest.raises(BaselineError) as error:
        check_baseline(str(base), CLASSES, allow_no_baseline=False)
    message = str(error.value)
    assert problem in message and "--allow-no-baseline" in message and "\n" not in message
    allowed = check_baseline(str(base), CLASSES, allow_no_baseline=True)
    assert allowed.version is None and problem in allowed.note


@pytest.mark.slow
def test_the_command_refuses_a_serving_dir_without_a_usable_baseline(tmp_path):
    serving = tmp_path / "serving"
    write_version(serving / "image_classifier", "1700000000", graph=False)
    result = run_local("--data-dir", str(MINI), "--output-dir", str(tmp_path / "out"),
                       "--serving-dir", str(serving), "--base-weights", "none", "--alpha", "0.35")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no-regression gate: ") and "--allow-no-baseline" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "pipeline_root").exists()  # stopped before the pipeline
