"""The kfp.local harness of `make kubeflow-test` (tests/kfp_local_run.py), without a container
engine: what it puts back into kfp's local runner, and what it counts as a finished task."""

from __future__ import annotations

import json

import pytest
import yaml
from kfp.local import executor_input_utils, executor_output_utils
from kfp.pipeline_spec import pipeline_spec_pb2

from tests import kfp_local_run

EXAMPLES_SCHEMA = "title: tfx.Examples\ntype: object\n"


def runtime_examples() -> pipeline_spec_pb2.RuntimeArtifact:
    return pipeline_spec_pb2.RuntimeArtifact(
        name="examples", uri="/root/Gen/examples",
        type=pipeline_spec_pb2.ArtifactTypeSchema(instance_schema=EXAMPLES_SCHEMA))


def downstream_type(
        artifact: pipeline_spec_pb2.RuntimeArtifact) -> pipeline_spec_pb2.ArtifactTypeSchema:
    """The type the next task's executor input gets for an output, through kfp.local."""
    as_dsl = executor_output_utils.artifact_list_to_dsl_artifact(
        pipeline_spec_pb2.ArtifactList(artifacts=[artifact]), is_artifact_list=False)
    [passed] = executor_input_utils.dsl_artifact_to_artifact_list(as_dsl).artifacts
    return passed.type


@pytest.fixture
def restore_kfp_local(monkeypatch):
    """Undoes the harness' patches after the test."""
    for module, name in ((executor_output_utils, "runtime_artifact_to_dsl_artifact"),
                         (executor_input_utils, "dsl_artifact_to_artifact_list")):
        monkeypatch.setattr(module, name, getattr(module, name))


def test_kfp_local_alone_drops_tfx_artifact_types(restore_kfp_local):
    assert downstream_type(runtime_examples()).schema_title == "system.Artifact"


def test_the_harness_passes_the_producers_declared_type_downstream(restore_kfp_local):
    kfp_local_run.keep_artifact_types()
    assert downstream_type(runtime_examples()).instance_schema == EXAMPLES_SCHEMA


def write_spec(tmp_path, tasks: dict[str, list[str]]):
    """A PipelineSpec with these tasks (name -> output artifact keys), as TFX names them."""
    spec = {"root": {"dag": {"tasks": {t: {"componentRef": {"name": t}} for t in tasks}}},
            "components": {t: {"outputDefinitions": {"artifacts": {k: {} for k in keys}}}
                           for t, keys in tasks.items()}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_task_counts_as_finished_only_with_its_executor_output(tmp_path):
    spec = write_spec(tmp_path, {"ImportExampleGen": ["examples"], "Trainer": ["model"]})
    run = tmp_path / "root" / "tfx-image-transfer-2026-12-02-19-00-00-000000"
    # kfp.local cuts five characters (a `comp-` prefix TFX's names lack) off the folder name.
    (run / "tExampleGen").mkdir(parents=True)
    (run / "tExampleGen" / "executor_output.json").write_text(
        json.dumps({"artifacts": {"examples": {"artifacts": [{"uri": "u"}]}}}))
    (run / "er").mkdir()
    with pytest.raises(AssertionError, match="Trainer wrote no executor_output.json"):
        kfp_local_run.task_outputs(spec, kfp_local_run.local_reader(tmp_path / "root"))
    (run / "er" / "executor_output.json").write_text(json.dumps({"artifacts": {}}))
    with pytest.raises(AssertionError, match="Trainer's executor output lacks model"):
        kfp_local_run.task_outputs(spec, kfp_local_run.local_reader(tmp_path / "root"))
    (run / "er" / "executor_output.json").write_text(
        json.dumps({"artifacts": {"model": {"artifacts": [{"uri": "m"}]}}}))
    outputs = kfp_local_run.task_outputs(spec, kfp_local_run.local_reader(tmp_path / "root"))
    assert kfp_local_run.artifact(outputs, "Trainer", "model")["uri"] == "m"
