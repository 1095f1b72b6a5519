"""The report on Kubeflow: the compiled spec declares the artifacts KFP's UI draws, with the
types it draws them by, and the pods can import their classes back from those types."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entrypoint
from tfx.types.value_artifact import ValueArtifact
from tfx.utils import import_utils

from pipeline import run_kubeflow
from pipeline.config import PipelineConfig
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
        "examples": ("ImportExampleGen", "examples"), "model": ("Trainer", "model"),
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
