"""The Kubeflow entry point's URI rewriting (pipeline/kubeflow_entrypoint.py): artifacts at the
launcher's local paths going in, the remote URIs given back in the executor output."""

from __future__ import annotations

import copy

from pipeline.kubeflow_entrypoint import launcher_path, localize, restore_remote_uris


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
