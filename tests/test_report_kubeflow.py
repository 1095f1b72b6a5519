"""The report on Kubeflow: the compiled spec declares the artifacts KFP's UI draws, with the
types it draws them by, and the pods can import their classes back from those types."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entrypoint
from tfx.types.value_artifact import ValueArtifact
from tfx.utils import import_utils

from pipeline import run_kubeflow
from pipeline.config import PipelineConfig
from tests.conftest import REPO
from tests.test_kubeflow import CLASSES, IMAGE, ROOT, fake_examples_dir, load_spec, parameter

# What KFP's UI visualizes (its frontend filters artifacts by these ML Metadata type names).
KFP_UI_TYPES = {"html": "system.HTML", "markdown": "system.Markdown",
                "metrics": "system.Metrics", "confusion": "system.ClassificationMetrics"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("report-kubeflow")
    examples = str(fake_examples_dir(tmp / "examples", CLASSES))
    cfg = PipelineConfig(output_dir=str(tmp / "out"))
    path = run_kubeflow.compile_pipeline(cfg, examples, CLASSES, IMAGE,
                                         str(tmp / "pipeline.yaml"), ROOT)
    return cfg, examples, load_spec(Path(path))


def report_component(spec):
    return spec.components[spec.root.dag.tasks["RunReport"].component_ref.name]


def test_the_report_declares_the_kfp_ui_artifacts(compiled):
    _, _, spec = compiled
    outputs = report_component(spec).output_definitions.artifacts
    titles = {k: yaml.safe_load(v.artifact_type.instance_schema)["title"]
              for k, v in outputs.items()}
    assert titles == {**KFP_UI_TYPES, "report": "components.RunReport"}
    for key, title in KFP_UI_TYPES.items():
        # The executor entrypoint in the pod imports each output's class from its type schema.
        path = entrypoint._retrieve_class_path(outputs[key].artifact_type)
        klass = import_utils.import_class_by_path(path)
        assert title == klass.TYPE_NAME
        # HTML and Markdown are files at the uri, which KFP's UI reads.
        assert issubclass(klass, ValueArtifact) == (key in ("html", "markdown")), key


def test_the_report_runs_last_and_reads_every_source(compiled):
    _, examples, spec = compiled
    task = spec.root.dag.tasks["RunReport"]
    sources = {k: (a.task_output_artifact.producer_task, a.task_output_artifact.output_artifact_key)
               for k, a in task.inputs.artifacts.items()}
    assert sources == {
        "examples": ("ImportExampleGen", "examples"),
        "model": ("OnDeviceGate", "pushed_model_candidate"),
        "model_run": ("Trainer", "model_run"), "blessing": ("Evaluator", "blessing"),
        "evaluation": ("Evaluator", "evaluation"), "serving_check": ("ServingCheck", "blessing"),
        "pushed_model": ("Pusher", "pushed_model"),
        "anomalies": ("ExampleValidator", "anomalies")}
    # No task reads the report: it is the run's last step.
    assert not [t for t, s in spec.root.dag.tasks.items()
                if any(a.task_output_artifact.producer_task == "RunReport"
                       for a in s.inputs.artifacts.values())]
    assert parameter(spec, "RunReport", "ingested_dir") == examples
    # ML Metadata is Kubeflow's own there: no local store for the Timing section.
    assert parameter(spec, "RunReport", "metadata_path") == ""


def _metadata(artifact) -> dict:
    """An ML Metadata artifact's properties as a RuntimeArtifact's metadata (as KFP sends)."""
    values = {**artifact.properties, **artifact.custom_properties}
    return {k: getattr(v, v.WhichOneof("value")) for k, v in values.items()
            if v.WhichOneof("value") in ("int_value", "double_value", "string_value")}


def run_report_like_a_kfp_pod(run_dir: Path, examples_dir: str, pod_dir: Path) -> dict:
    """Runs RunReport as a Kubeflow pod runs it, on a local run's artifacts.

    The command and executor class come from the compiled spec; the ExecutorInput holds the
    local run's artifacts with the spec's artifact types, and TFX's V2 container entrypoint
    imports each type's class, runs the executor and writes the ExecutorOutput KFP records.

    Returns:
      {"output": the ExecutorOutput as a dict, "uris": {output key: uri}}.
    """
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2 as kfp_spec

    from components.report.mlmd import open_store
    from tests.test_kubeflow import executors

    path = run_kubeflow.compile_pipeline(PipelineConfig(output_dir=str(run_dir)), examples_dir,
                                         CLASSES, IMAGE, str(pod_dir / "pipeline.yaml"), ROOT)
    spec = load_spec(Path(path))
    task, component = spec.root.dag.tasks["RunReport"], report_component(spec)
    store = open_store(str(run_dir / "metadata.sqlite"))
    executor_input = kfp_spec.ExecutorInput()
    for key, source in task.inputs.artifacts.items():
        producer = source.task_output_artifact
        folder = run_dir / "pipeline_root" / producer.producer_task / producer.output_artifact_key
        uri = str(max(folder.iterdir(), key=lambda p: int(p.name)))
        (artifact,) = store.get_artifacts_by_uri(uri)
        runtime = executor_input.inputs.artifacts[key].artifacts.add()
        runtime.uri, runtime.name = uri, f"input-{key}"
        runtime.type.CopyFrom(component.input_definitions.artifacts[key].artifact_type)
        runtime.metadata.update(_metadata(artifact))
    for name, value in task.inputs.parameters.items():
        constant = value.runtime_value
        if constant.HasField("constant_value"):  # the older form of a constant in a spec
            executor_input.inputs.parameters[name].CopyFrom(constant.constant_value)
        else:
            executor_input.inputs.parameter_values[name].CopyFrom(constant.constant)
    uris = {}
    for key, definition in component.output_definitions.artifacts.items():
        runtime = executor_input.outputs.artifacts[key].artifacts.add()
        runtime.uri = uris[key] = str(pod_dir / "outputs" / key)  # KFP names a path, no folder
        runtime.name = f"output-{key}"
        runtime.type.CopyFrom(definition.artifact_type)
    executor_input.outputs.output_file = str(pod_dir / "executor_output.json")
    container = executors(spec)[component.executor_label].container
    invocation = json_format.MessageToJson(executor_input)
    args = [invocation if a == "{{$}}" else a for a in container.args]
    result = subprocess.run([sys.executable, *list(container.command)[1:], *args],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"output": json.loads((pod_dir / "executor_output.json").read_text()), "uris": uris}


@pytest.mark.parametrize("blessed, reason", [(1, None), (0, "cannot load: bad warmup")])
def test_the_serving_check_reads_the_same_in_a_pod(blessed, reason):
    # A pod gets its inputs' custom properties as JSON, numbers as floats (0.0 included).
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2 as kfp_spec
    from tfx.types.standard_artifacts import InfraBlessing

    from components.report import plain_properties
    from components.serving_check import blessing_entry

    metadata = {"blessed": blessed, "warmup_requests": 5, "requests": 4}
    if reason:
        metadata["reason"] = reason
    runtime = json_format.ParseDict({"artifacts": [{
        "name": "b", "uri": "/x", "metadata": metadata,
        "type": {"instanceSchema": "title: tfx.InfraBlessing\ntype: object\n"}}]},
        kfp_spec.ArtifactList())
    (artifact,) = entrypoint.parse_raw_artifact_dict({"blessing": runtime}, {})["blessing"]
    assert isinstance(artifact, InfraBlessing)
    assert artifact.mlmd_artifact.custom_properties["blessed"].HasField("struct_value")
    assert blessing_entry(plain_properties(artifact)) == {
        "blessed": bool(blessed), "reason": reason, "warmup_requests": 5, "requests": 4}
