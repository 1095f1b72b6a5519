"""The Kubeflow entry point's URI rewriting (pipeline/kubeflow_entrypoint.py): artifacts at the
launcher's local paths going in, the remote URIs given back in the executor output."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipeline import object_store
from pipeline.kubeflow_entrypoint import (
    launcher_path,
    localize,
    restore_remote_uris,
    stage_parameter_locations,
    upload_changes,
)


def test_launcher_paths_per_scheme(tmp_path):
    root = str(tmp_path)
    assert launcher_path("minio://mlpipeline/v2/run/task/model", False, root) == (
        f"{root}/minio/mlpipeline/v2/run/task/model")
    assert launcher_path("s3://b/p/x?region=us-east-1&endpoint=h", False, root) == (
        f"{root}/s3/b/p/x")
    assert launcher_path("gs://b/x", True, root) == f"{root}/gcs/b/x"
    assert launcher_path("gs://b/x", False, root) is None  # TensorFlow writes gs:// itself
    for left_alone in ("/tmp/local/x", "hdfs://nn/x", "", "file-name"):
        assert launcher_path(left_alone, True, root) is None


def executor_input() -> dict:
    def artifacts(uri: str) -> dict:
        return {"artifacts": [{"name": "a", "uri": uri, "metadata": {}}]}

    return {"inputs": {"artifacts": {"examples": artifacts("minio://b/r/Gen/examples"),
                                     "local": artifacts("/mnt/data/x")}},
            "outputs": {"artifacts": {"model": artifacts("minio://b/r/Trainer/model"),
                                      "run": artifacts("s3://b/r/Trainer/model_run")},
                        "outputFile": "/tmp/kfp_outputs/output_metadata.json"}}


def test_localize_rewrites_artifacts_and_creates_output_parents(tmp_path):
    given = executor_input()
    remote_of = localize(given, gcs_staged=False, root=str(tmp_path))
    uris = {k: v["artifacts"][0]["uri"] for section in ("inputs", "outputs")
            for k, v in given[section]["artifacts"].items()}
    assert uris == {"examples": f"{tmp_path}/minio/b/r/Gen/examples", "local": "/mnt/data/x",
                    "model": f"{tmp_path}/minio/b/r/Trainer/model",
                    "run": f"{tmp_path}/s3/b/r/Trainer/model_run"}
    assert remote_of[f"{tmp_path}/minio/b/r/Trainer/model"] == "minio://b/r/Trainer/model"
    assert (tmp_path / "minio/b/r/Trainer").is_dir() and (tmp_path / "s3/b/r/Trainer").is_dir()
    assert not (tmp_path / "minio/b/r/Gen").exists()  # inputs are the launcher's to download
    assert given["outputs"]["outputFile"] == "/tmp/kfp_outputs/output_metadata.json"


def test_the_executor_output_gets_the_remote_uris_back(tmp_path):
    given = executor_input()
    remote_of = localize(copy.deepcopy(given), gcs_staged=False, root="/")
    written = {"artifacts": {"blessing": {"artifacts": [{
        "name": "blessing", "uri": "/minio/b/r/Trainer/model",
        "metadata": {"current_model": "/minio/b/r/Trainer/model/Format-Serving",
                     "blessed": 1.0, "elsewhere": "/minio/b/r/Trainer/model_x",
                     "nested": ["/s3/b/r/Trainer/model_run"]}}]}}}
    restored = restore_remote_uris(written, remote_of)
    [artifact] = restored["artifacts"]["blessing"]["artifacts"]
    assert artifact["uri"] == "minio://b/r/Trainer/model"
    assert artifact["metadata"] == {
        "current_model": "minio://b/r/Trainer/model/Format-Serving", "blessed": 1.0,
        "elsewhere": "/minio/b/r/Trainer/model_x",  # not below a rewritten path: left alone
        "nested": ["s3://b/r/Trainer/model_run"]}
    assert written["artifacts"]["blessing"]["artifacts"][0]["uri"].startswith("/minio/")


def test_the_launchers_log_output_is_not_handed_to_tfx(tmp_path):
    """The KFP driver adds `executor-logs` (system.Artifact) to every step's outputs; TFX
    cannot make an artifact of that type, so the entry point takes it out."""
    given = executor_input()
    logs = {"artifacts": [{"name": "executor-logs", "type": {"schemaTitle": "system.Artifact"},
                           "uri": "minio://b/r/Trainer/executor-logs"}]}
    given["outputs"]["artifacts"]["executor-logs"] = logs
    localize(given, gcs_staged=False, root=str(tmp_path))
    assert "executor-logs" not in given["outputs"]["artifacts"]
    assert set(given["outputs"]["artifacts"]) == {"model", "run"}


def test_a_component_output_of_that_name_and_another_type_stays(tmp_path):
    given = executor_input()
    given["outputs"]["artifacts"]["executor-logs"] = {"artifacts": [{
        "name": "executor-logs", "type": {"schemaTitle": "tfx.Model"},
        "uri": "minio://b/r/T/executor-logs"}]}
    localize(given, gcs_staged=False, root=str(tmp_path))
    assert "executor-logs" in given["outputs"]["artifacts"]


def test_parameter_locations_are_staged_and_changes_copied_back(s3_store, tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "saved_model.pb").write_bytes(b"one")
    (tmp_path / "w.h5").write_bytes(b"weights")
    object_store.upload(s3_store, tmp_path / "v1", "minio://mlpipeline/serving/m/1")
    object_store.upload(s3_store, tmp_path / "w.h5", "minio://mlpipeline/weights/w.h5")
    given = {"inputs": {"parameterValues": {
        "serving_model_dir": "minio://mlpipeline/serving/m",
        "push_destination": json.dumps({"filesystem": {"base_directory": "minio://mlpipeline/serving/m"}}),
        "custom_config": json.dumps({"training": {"base_weights": "minio://mlpipeline/weights/w.h5"}}),
        "input_base": "minio://mlpipeline/nothing/here", "epochs": 3, "other": "minio://mlpipeline/serving/mm"}}}
    staged = stage_parameter_locations(given, str(tmp_path / "staged"))
    local = {s.remote: s.local for s in staged}
    assert sorted(local) == ["minio://mlpipeline/nothing/here", "minio://mlpipeline/serving/m",
                             "minio://mlpipeline/serving/mm", "minio://mlpipeline/weights/w.h5"]
    parameters = given["inputs"]["parameterValues"]
    serving = local["minio://mlpipeline/serving/m"]
    assert parameters["serving_model_dir"] == str(serving)
    assert json.loads(parameters["push_destination"])["filesystem"]["base_directory"] == str(
        serving)
    weights = json.loads(parameters["custom_config"])["training"]["base_weights"]
    assert Path(weights).read_bytes() == b"weights"
    assert (serving / "1" / "saved_model.pb").read_bytes() == b"one"
    assert parameters["other"] == str(local["minio://mlpipeline/serving/mm"])  # not inside .../m
    assert parameters["epochs"] == 3
    assert not Path(parameters["input_base"]).exists()  # nothing there: nothing made
    # The step adds a version; only its files go back.
    (serving / "2" / "variables").mkdir(parents=True)
    (serving / "2" / "saved_model.pb").write_bytes(b"two")
    (serving / "2" / "variables" / "variables.index").write_bytes(b"index")
    assert upload_changes(staged) == 2
    assert object_store.keys(s3_store, "minio://mlpipeline/serving") == [
        "serving/m/1/saved_model.pb", "serving/m/2/saved_model.pb",
        "serving/m/2/variables/variables.index"]


def test_an_unreachable_store_is_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    given = {"inputs": {"parameterValues": {"serving_model_dir": "minio://mlpipeline/serving"}}}
    with pytest.raises(object_store.ObjectStoreError, match="set AWS_ENDPOINT_URL"):
        stage_parameter_locations(given, str(tmp_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(object_store.ObjectStoreError) as raised:
        stage_parameter_locations(given, str(tmp_path))
    assert "\n" not in str(raised.value) and "minio://mlpipeline/serving" in str(raised.value)


def test_a_saved_model_graph_is_uploaded_after_its_variables(tmp_path):
    calls = []

    class Recorder:
        def upload_file(self, path, bucket, key):
            calls.append(key)

    (tmp_path / "variables").mkdir()
    for name in ("saved_model.pb", "variables/variables.index", "fingerprint.pb"):
        (tmp_path / name).write_bytes(b"x")
    assert object_store.upload(Recorder(), tmp_path, "s3://b/m/7") == 3
    assert calls[-1] == "m/7/saved_model.pb" and len(set(calls)) == 3
