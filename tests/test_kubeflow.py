"""Kubeflow: the compiled spec of the shared pipeline, the CLI, and the image's recipe.

Nothing here trains or runs a pipeline: compiling reads labels.txt and no TFRecords.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kfp
import pytest
import yaml
from google.protobuf import json_format, struct_pb2
from kfp.components import load_component_from_file
from kfp.pipeline_spec import pipeline_spec_pb2 as kfp_spec
from tensorflow_model_analysis.proto import config_pb2
from tfx import v1 as tfx
from tfx.components.infra_validator import executor as infra_validator_executor
from tfx.dsl.components.base import base_executor
from tfx.orchestration.kubeflow.v2 import compiler_utils
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types.artifact import Artifact
from tfx.utils import import_utils

from components.run_knobs import (
    RunKnobError,
    evaluator_properties,
    gate_knobs,
    trainer_properties,
)
from contract import features
from contract.knobs import GATE_KNOBS, PER_RUN_KNOBS, TRAINER_KNOBS
from ingestion.beam_options import beam_pipeline_args
from pipeline import definition, run_kubeflow, run_local
from pipeline.config import (
    KUBERNETES_CHECK,
    SERVING_CHECKS,
    SESSION_CHECK,
    TF_SERVING_IMAGE,
    PipelineConfig,
    add_flags,
)
from tests.conftest import ALPHA, MINI, REPO, WEIGHTS
from tests.conftest import run_local as run_local_cli
from trainer.config import TrainingConfig
from trainer.task import CLASSES_KEY, CONFIG_KEY

IMAGE = "registry.example.com/ml/tfx-image-transfer:test"
ROOT = "gs://bucket/pipeline_root"
SERVING = "gs://bucket/serving"
CLASSES = ["cats", "dogs"]
EXECUTOR_COMMAND = ["python", "-m", "pipeline.kubeflow_entrypoint"]
KUBEFLOW_FLAGS = {"--image", "--examples-dir", "--pipeline-root", "--output-file", "--submit",
                  "--host", "--serving-check", "--s3-endpoint", "--s3-secret"}
# The step whose InfraBlessing gates the push, by --serving-check.
CHECK_NODE = {SESSION_CHECK: "ServingCheck", KUBERNETES_CHECK: "InfraValidator"}
PROJECT_PACKAGES = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                       ["packages"])


def fake_examples_dir(root: Path, classes: list[str]) -> Path:
    """What ingestion writes, minus the TFRecords (compiling does not read them)."""
    for split in features.SPLITS:
        (root / split).mkdir(parents=True)
    (root / "labels.txt").write_text("\n".join(classes) + "\n")
    return root


def load_spec(path: Path) -> kfp_spec.PipelineSpec:
    """The YAML file as a PipelineSpec proto (unknown fields are an error)."""
    return json_format.ParseDict(yaml.safe_load(path.read_text()), kfp_spec.PipelineSpec())


def executors(spec: kfp_spec.PipelineSpec) -> dict:
    """Executor label -> PipelineDeploymentConfig.ExecutorSpec."""
    deployment = json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec),
                                       kfp_spec.PipelineDeploymentConfig())
    return dict(deployment.executors)


def parameter(spec: kfp_spec.PipelineSpec, task: str, name: str) -> str:
    """A task's parameter: its constant, or the default of the runtime parameter it takes."""
    source = spec.root.dag.tasks[task].inputs.parameters[name]
    if source.component_input_parameter:
        root = spec.root.input_definitions.parameters[source.component_input_parameter]
        return root.default_value.string_value
    return source.runtime_value.constant.string_value


def task_owners(spec: kfp_spec.PipelineSpec, ids: list[str]) -> dict[str, str]:
    """DAG task -> local component id (a Resolver compiles to '<id>-...' query tasks)."""
    owners = {}
    for task in spec.root.dag.tasks:
        matches = [i for i in ids if task == i or task.startswith(i + "-")]
        assert len(matches) == 1, f"task {task} matches components {matches}"
        owners[task] = matches[0]
    return owners


@dataclass
class Compiled:
    cfg: PipelineConfig
    examples_dir: str
    path: Path
    spec: kfp_spec.PipelineSpec
    local: tfx.dsl.Pipeline  # what run_local would run with the same arguments
    serving_check: str


# Every spec test runs on both --serving-check modes.
@pytest.fixture(scope="module", params=SERVING_CHECKS)
def compiled(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    tmp = tmp_path_factory.mktemp("kubeflow")
    examples = str(fake_examples_dir(tmp / "examples", CLASSES))
    cfg = PipelineConfig(output_dir=str(tmp / "out"), serving_dir=SERVING, epochs=3,
                         learning_rate=0.002)
    path = run_kubeflow.compile_pipeline(cfg, examples, CLASSES, IMAGE,
                                         str(tmp / "spec" / "pipeline.yaml"), ROOT,
                                         serving_check=request.param)
    local = definition.create_pipeline(cfg, examples, CLASSES, metadata_path=str(tmp / "m.db"),
                                       beam_pipeline_args=beam_pipeline_args(cfg.beam_workers),
                                       serving_check=request.param)
    return Compiled(cfg, examples, Path(path), load_spec(Path(path)), local, request.param)


def test_spec_has_every_local_component_with_the_same_dependencies(compiled):
    spec, local = compiled.spec, compiled.local
    ids = [c.id for c in local.components]
    owners = task_owners(spec, ids)
    assert sorted(set(owners.values())) == sorted(ids)
    for component in local.components:
        depends_on = set()
        for task, owner in owners.items():
            if owner != component.id:
                continue
            task_spec = spec.root.dag.tasks[task]
            # Kubeflow orders tasks by dependentTasks: it must name every other data producer.
            producers = {a.task_output_artifact.producer_task
                         for a in task_spec.inputs.artifacts.values()
                         if a.HasField("task_output_artifact")}
            assert {p for p in producers if owners[p] != owner} <= set(task_spec.dependent_tasks)
            depends_on |= {owners[t] for t in task_spec.dependent_tasks}
        assert depends_on - {component.id} == {u.id for u in component.upstream_nodes}, (
            component.id)
    assert spec.pipeline_info.name == compiled.cfg.pipeline_name
    assert kfp.components.load_component_from_file(str(compiled.path)).name == (
        compiled.cfg.pipeline_name)


def test_every_executor_runs_project_code_in_the_image(compiled):
    spec = compiled.spec
    all_executors = executors(spec)
    containers = {k: e.container for k, e in all_executors.items() if e.HasField("container")}
    # Every step is a container: the gate's baseline (ServedBaseline) reads the serving dir
    # in its pod; no Resolver, which Kubeflow Pipelines' open-source v2 backend does not run.
    assert set(all_executors) == set(containers)
    assert len(containers) == len(compiled.local.components)
    classes = set()
    for label, container in containers.items():
        assert container.image == IMAGE, label
        assert list(container.command) == EXECUTOR_COMMAND, label
        args = list(container.args)
        assert args[-3:] == beam_pipeline_args(compiled.cfg.beam_workers), label
        path = args[args.index("--executor_class_path") + 1]
        assert path.split(".")[0] in PROJECT_PACKAGES | {"tfx"}, path  # both are in the image
        assert issubclass(import_utils.import_class_by_path(path), base_executor.BaseExecutor)
        classes.add(path)
    assert {"components.pusher.IdempotentPusherExecutor",
            "components.anomaly_gate.AnomalyGate_Executor",
            "components.served_baseline.ServedBaseline_Executor",
            "components.run_knobs.TrainerExecutor",
            "components.run_knobs.EvaluatorExecutor"} <= classes
    check = {SESSION_CHECK: "components.serving_check.ServingCheck_Executor",
             KUBERNETES_CHECK: "components.serving_check.KubeflowInfraValidatorExecutor"}
    assert check[compiled.serving_check] in classes
    assert not (set(check.values()) - {check[compiled.serving_check]}) & classes


def producer(spec: kfp_spec.PipelineSpec, task: str, artifact: str) -> tuple[str, str]:
    """(producer task, its output key) of a task's input artifact."""
    source = spec.root.dag.tasks[task].inputs.artifacts[artifact].task_output_artifact
    return source.producer_task, source.output_artifact_key


def test_the_serving_check_gates_the_push_and_feeds_the_report(compiled):
    spec, node = compiled.spec, CHECK_NODE[compiled.serving_check]
    assert set(CHECK_NODE.values()) & set(spec.root.dag.tasks) == {node}
    assert producer(spec, "Pusher", "infra_blessing") == (node, "blessing")
    assert producer(spec, "Pusher", "model_blessing") == ("Evaluator", "blessing")
    assert producer(spec, "Evaluator", "baseline_model") == ("ServedBaseline", "baseline")
    assert parameter(spec, "ServedBaseline", "serving_model_dir") == (
        f"{SERVING}/{compiled.cfg.model_name}")
    assert producer(spec, "RunReport", "serving_check") == (node, "blessing")
    assert producer(spec, node, "model") == ("Trainer", "model")
    assert producer(spec, node, "examples") == ("ImportExampleGen", "examples")
    outputs = spec.components[spec.root.dag.tasks[node].component_ref.name].output_definitions
    schema = yaml.safe_load(outputs.artifacts["blessing"].artifact_type.instance_schema)
    assert schema["title"] == "tfx.InfraBlessing"  # the stock Pusher's infra_blessing type


@pytest.mark.parametrize("compiled", [KUBERNETES_CHECK], indirect=True)
def test_kubernetes_mode_runs_tfx_infra_validator_on_the_tf_serving_image(compiled):
    spec = compiled.spec
    serving = json.loads(parameter(spec, "InfraValidator", "serving_spec"))
    binary = serving["tensorflow_serving"]
    assert [f"{binary['image_name']}:{tag}" for tag in binary["tags"]] == [TF_SERVING_IMAGE]
    assert serving["kubernetes"] == {} and serving["model_name"] == compiled.cfg.model_name
    # LOAD_AND_QUERY: real Predict requests on the signature that takes serialized tf.Examples.
    request = json.loads(parameter(spec, "InfraValidator", "request_spec"))
    assert request["tensorflow_serving"]["signature_names"] == ["from_examples"]
    assert request["split_name"] == "test" and request["num_examples"] >= 1
    validation = json.loads(parameter(spec, "InfraValidator", "validation_spec"))
    assert validation["max_loading_time_seconds"] > 0 and validation["num_tries"] >= 1
    # TFX's executor (with KFP_NAMESPACE set; tests/test_serving_check.py runs it).
    (label,) = [k for k in executors(spec) if k.startswith("InfraValidator")]
    args = list(executors(spec)[label].container.args)
    path = args[args.index("--executor_class_path") + 1]
    assert issubclass(import_utils.import_class_by_path(path), infra_validator_executor.Executor)


def test_the_tf_serving_image_is_defined_once():
    compose = yaml.safe_load((REPO / "serving" / "docker-compose.yml").read_text())
    images = [s["image"] for s in compose["services"].values()
              if s.get("image", "").startswith("tensorflow/serving")]
    assert images and set(images) == {TF_SERVING_IMAGE}
    # The server the pipeline validates against speaks the client's version of the API.
    assert TF_SERVING_IMAGE.split(":")[1] == importlib.metadata.version("tensorflow-serving-api")


def test_every_artifact_type_resolves_to_a_class_as_in_the_pods(compiled):
    # The executor entry point imports each artifact's class from its schema title.
    titles = set()
    for component in compiled.spec.components.values():
        for definitions in (component.input_definitions, component.output_definitions):
            for artifact in definitions.artifacts.values():
                titles.add(yaml.safe_load(artifact.artifact_type.instance_schema)["title"])
    assert {"tfx.Examples", "tfx.Model", "tfx.ModelBlessing"} <= titles
    for title in titles:
        path = compiler_utils.TITLE_TO_CLASS_PATH.get(title, title)
        assert issubclass(import_utils.import_class_by_path(path), Artifact), title


def test_trainer_pusher_and_example_gen_carry_the_run_configuration(compiled):
    spec, cfg = compiled.spec, compiled.cfg
    assert parameter(spec, "Trainer", "run_fn") == "trainer.task.run_fn"
    custom = json.loads(parameter(spec, "Trainer", "custom_config"))
    # custom_config holds the training config but the run knobs, which are parameters.
    training = cfg.training_config().to_dict()
    assert custom[CONFIG_KEY] == {k: v for k, v in training.items() if k not in TRAINER_KNOBS}
    assert custom[CLASSES_KEY] == CLASSES
    trainer = next(c for c in compiled.local.components if c.id == "Trainer")
    assert custom == json.loads(trainer.exec_properties["custom_config"])  # all of it, as local
    destination = json.loads(parameter(spec, "Pusher", "push_destination"))
    assert destination["filesystem"]["base_directory"] == f"{SERVING}/{cfg.model_name}"
    assert parameter(spec, "ImportExampleGen", "input_base") == compiled.examples_dir


def test_the_run_knobs_are_typed_runtime_parameters_with_the_compiled_defaults(compiled):
    spec, cfg = compiled.spec, compiled.cfg
    assert spec.schema_version == "2.1.0"  # what kfp 2.x compiles and its backend runs
    root = spec.root.input_definitions.parameters
    # Exactly the table's per-run knobs, the Trainer's and the Evaluator's.
    assert set(root) == set(PER_RUN_KNOBS) >= {
        "epochs", "fine_tune_epochs", "learning_rate", "min_accuracy"}
    local = {c.id: c for c in compiled.local.components}
    kinds = {**TRAINER_KNOBS, **GATE_KNOBS}
    owner = {**dict.fromkeys(TRAINER_KNOBS, "Trainer"), **dict.fromkeys(GATE_KNOBS, "Evaluator")}
    for name, task in owner.items():
        assert spec.root.dag.tasks[task].inputs.parameters[name].component_input_parameter \
            == name
        assert root[name].is_optional
        assert root[name].parameter_type == {int: kfp_spec.ParameterType.NUMBER_INTEGER,
                                             float: kfp_spec.ParameterType.NUMBER_DOUBLE}[
                                                 kinds[name]]
        # The default is what the local runner runs with, which is the config's value.
        assert root[name].default_value.number_value == local[task].exec_properties[name] \
            == getattr(cfg, name)
    assert (root["epochs"].default_value.number_value,
            root["learning_rate"].default_value.number_value) == (3, 0.002)
    # The kfp SDK sees them as optional typed inputs with these defaults.
    inputs = kfp.components.load_component_from_file(str(compiled.path)).component_spec.inputs
    assert {k: (v.type, v.default) for k, v in inputs.items()} == {
        k: ("Integer" if kinds[k] is int else "Float", getattr(cfg, k)) for k in root}


def test_runtime_parameters_are_the_tables_per_run_knobs_at_the_configs_values():
    cfg = PipelineConfig.for_recipe("tutorial", min_accuracy=0.8)
    parameters = run_kubeflow.runtime_parameters(cfg)
    assert list(parameters) == list(PER_RUN_KNOBS)
    for name, p in parameters.items():
        assert (p.name, p.ptype, p.default) == (name, PER_RUN_KNOBS[name], getattr(cfg, name))


def test_create_pipeline_refuses_a_runtime_parameter_no_component_takes(tmp_path):
    from tfx.orchestration import data_types

    examples = str(fake_examples_dir(tmp_path / "examples", CLASSES))
    seed = data_types.RuntimeParameter(name="seed", ptype=int, default=1)
    with pytest.raises(ValueError, match=r"no knob a run may set: \['seed'\]"):
        definition.create_pipeline(PipelineConfig(output_dir=str(tmp_path)), examples, CLASSES,
                                   runtime_parameters={"seed": seed})


def test_the_kfp_compiler_passes_typed_run_values_and_refuses_mistyped_ones(compiled, tmp_path):
    # The compiled spec as a component of a kfp pipeline: kfp's own compiler type-checks the
    # arguments against the parameters' types, as the UI and kfp.Client do.
    from kfp import compiler, dsl
    from kfp.dsl.types.type_utils import InconsistentTypeException

    run = kfp.components.load_component_from_file(str(compiled.path))

    @dsl.pipeline(name="one-run")
    def one_run():
        run(epochs=5, learning_rate=0.01, min_accuracy=0.95)

    compiler.Compiler().compile(one_run, str(tmp_path / "run.yaml"))
    wrapper = load_spec(tmp_path / "run.yaml")
    (task,) = wrapper.root.dag.tasks.values()
    assert {k: v.runtime_value.constant.number_value for k, v in task.inputs.parameters.items()
            } == {"epochs": 5, "learning_rate": 0.01, "min_accuracy": 0.95}

    with pytest.raises(InconsistentTypeException, match="'epochs'"):
        @dsl.pipeline(name="mistyped")  # kfp builds the pipeline when it is defined
        def mistyped():
            run(epochs="five")


def properties_in_the_pod(compiled: Compiled, task: str, sent: dict[str, Any]) -> dict[str, Any]:
    """The exec properties TFX's entry point in a task's pod makes of the parameterValues the
    Kubeflow Pipelines 2.x launcher sends: it reads them through the inputs spec that schema 2.1
    puts into the container's arguments (without it, it would read the deprecated
    `parameters`). Parameters not in `sent` take their compiled constant or default."""
    (label,) = [k for k in executors(compiled.spec) if k.startswith(task)]
    args = list(executors(compiled.spec)[label].container.args)
    inputs_spec = json_format.Parse(args[args.index("--json_serialized_inputs_spec_args") + 1],
                                    kfp_spec.ComponentInputsSpec())
    values = {}
    for name, source in compiled.spec.root.dag.tasks[task].inputs.parameters.items():
        root = source.component_input_parameter
        if root and root in sent:
            values[name] = struct_pb2.Value(number_value=sent[root])
        elif root:
            values[name] = compiled.spec.root.input_definitions.parameters[root].default_value
        else:
            values[name] = source.runtime_value.constant
    return kubeflow_v2_entrypoint_utils.parse_execution_properties(values, {}, inputs_spec)


def test_runtime_values_reach_the_trainers_config_and_the_gate(compiled):
    sent = {"epochs": 7, "fine_tune_epochs": 2, "learning_rate": 0.01, "min_accuracy": 0.9}
    properties = trainer_properties(properties_in_the_pod(compiled, "Trainer", sent))
    config = TrainingConfig.from_dict(json.loads(properties["custom_config"])[CONFIG_KEY])
    assert (config.epochs, config.fine_tune_epochs, config.learning_rate) == (7, 2, 0.01)
    assert config.patience == compiled.cfg.patience  # not sent: the compiled default
    assert config.to_dict() == dataclasses.replace(
        compiled.cfg.training_config(), epochs=7, fine_tune_epochs=2, learning_rate=0.01).to_dict()
    properties = evaluator_properties(properties_in_the_pod(compiled, "Evaluator", sent))
    eval_config = json_format.Parse(properties["eval_config"], config_pb2.EvalConfig())
    gates = [(m.config, t.threshold) for spec in eval_config.metrics_specs for m in spec.metrics
             for t in m.per_slice_thresholds]
    assert [(json.loads(c)["name"], gate_knobs(t)) for c, t in gates] == [
        ("accuracy", {"min_accuracy": 0.9, "max_accuracy_drop": compiled.cfg.max_accuracy_drop})]


def test_an_out_of_range_runtime_value_is_a_one_line_error(compiled):
    properties = properties_in_the_pod(compiled, "Trainer", {"epochs": 0, "learning_rate": 2})
    with pytest.raises(RunKnobError) as raised:
        trainer_properties(properties)
    assert str(raised.value) == ("invalid run parameters: epochs must be >= 1; "
                                 "learning_rate must be in (0, 1]")
    with pytest.raises(RunKnobError, match="min_accuracy must be in"):
        evaluator_properties(properties_in_the_pod(compiled, "Evaluator", {"min_accuracy": 1.5}))


def test_pipeline_root_in_yaml_and_json(compiled, tmp_path):
    assert compiled.spec.default_pipeline_root == ROOT
    # JSON is the whole PipelineJob; without a root given, the config's is used.
    path = run_kubeflow.compile_pipeline(compiled.cfg, compiled.examples_dir, CLASSES, IMAGE,
                                         str(tmp_path / "pipeline.json"),
                                         serving_check=compiled.serving_check)
    job = json_format.Parse(Path(path).read_text(), kfp_spec.PipelineJob())
    assert job.runtime_config.gcs_output_directory == compiled.cfg.pipeline_root
    spec = json_format.ParseDict(json_format.MessageToDict(job.pipeline_spec),
                                 kfp_spec.PipelineSpec())
    assert spec.default_pipeline_root == compiled.cfg.pipeline_root
    assert set(spec.root.dag.tasks) == set(compiled.spec.root.dag.tasks)


class StopBeforeRunning(Exception):
    pass


def test_run_local_and_run_kubeflow_build_the_pipeline_the_same_way(tmp_path, monkeypatch, capsys):
    real, calls = definition.create_pipeline, []

    def spy(stop: bool):
        def create_pipeline(cfg, examples_dir, class_names, **kwargs):
            calls.append((cfg, examples_dir, class_names, kwargs))
            if stop:
                raise StopBeforeRunning
            return real(cfg, examples_dir, class_names, **kwargs)
        return create_pipeline

    flags = ["--data-dir", str(MINI), "--output-dir", str(tmp_path / "out"), "--epochs", "2",
             "--base-weights", str(WEIGHTS), "--alpha", str(ALPHA)]
    monkeypatch.setattr(definition, "create_pipeline", spy(stop=True))
    with pytest.raises(StopBeforeRunning):
        run_local.run(run_local.parse_args(flags))
    monkeypatch.setattr(definition, "create_pipeline", spy(stop=False))
    monkeypatch.chdir(tmp_path)
    assert run_kubeflow.main([*flags, "--image", IMAGE, "--pipeline-root", ROOT]) == 0

    (local_cfg, local_dir, local_classes, local_kw), (cfg, examples_dir, classes, kw) = calls
    assert cfg == local_cfg and cfg.epochs == 2
    assert examples_dir == local_dir and "[ingest] reused" in capsys.readouterr().out
    assert classes == local_classes == CLASSES
    assert local_kw["metadata_path"] == cfg.metadata_path and kw["metadata_path"] is None
    assert kw["beam_pipeline_args"] == local_kw["beam_pipeline_args"]
    spec = load_spec(tmp_path / "tfx-image-transfer.yaml")  # the default --output-file
    assert parameter(spec, "ImportExampleGen", "input_base") == examples_dir


def option_strings(help_text: str) -> set[str]:
    """The flags an argparse --help lists (its option lines, not the help prose)."""
    flags = set()
    for line in help_text.splitlines():
        if match := re.match(r"  (-\S.*?)(?:\s{2,}|$)", line):
            flags.update(re.findall(r"--[\w-]+", match.group(1)))
    return flags


def run_kubeflow_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.run_kubeflow", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_help_lists_the_config_flags_of_run_local_plus_the_kubeflow_ones():
    config = argparse.ArgumentParser(add_help=False)
    add_flags(config)
    config_flags = option_strings(config.format_help())
    assert {"--epochs", "--learning-rate", "--serving-dir", "--no-enable-cache"} <= config_flags
    local, kubeflow = run_local_cli("--help"), run_kubeflow_cli("--help")
    assert local.returncode == 0 and kubeflow.returncode == 0, kubeflow.stderr
    assert option_strings(local.stdout) == config_flags | {"--help"}
    assert option_strings(kubeflow.stdout) == config_flags | {"--help"} | KUBEFLOW_FLAGS


@pytest.mark.slow
def test_cli_compiles_a_yaml_spec(tmp_path):
    examples = fake_examples_dir(tmp_path / "examples", ["ants", "bees", "wasps"])
    out = tmp_path / "specs" / "tfx-image-transfer.yaml"
    result = run_kubeflow_cli("--image", IMAGE, "--examples-dir", str(examples),
                              "--output-file", str(out), "--output-dir", str(tmp_path / "out"),
                              "--pipeline-root", ROOT, "--epochs", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"compiled {out}" in result.stdout
    spec = load_spec(out)
    assert spec.default_pipeline_root == ROOT
    custom = json.loads(parameter(spec, "Trainer", "custom_config"))
    assert custom[CLASSES_KEY] == ["ants", "bees", "wasps"]
    assert spec.root.input_definitions.parameters["epochs"].default_value.number_value == 4
    assert {e.container.image for e in executors(spec).values() if e.HasField("container")} == {
        IMAGE}


def test_cli_errors_name_the_problem(tmp_path, capsys):
    examples = str(fake_examples_dir(tmp_path / "examples", CLASSES))
    out = tmp_path / "pipeline.yaml"
    base = ["--image", IMAGE, "--output-file", str(out), "--pipeline-root", ROOT]
    (tmp_path / "empty").mkdir()
    one_class = str(fake_examples_dir(tmp_path / "one", ["cats"]))
    for examples_dir, message in [(str(tmp_path / "empty"), "lacks labels.txt, train/, eval/"),
                                  (one_class, "need at least 2")]:
        assert run_kubeflow.main([*base, "--examples-dir", examples_dir]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()

    for argv, message in [
        (["--output-file", str(out), "--examples-dir", examples], "required: --image"),
        ([*base, "--examples-dir", examples, "--data-dir", str(MINI)], "not both"),
        ([*base, "--examples-dir", examples, "--runner=DataflowRunner"], "unrecognized"),
        (["--image", IMAGE, "--examples-dir", examples, "--output-file", "p.txt"], ".json"),
        (["--image", IMAGE, "--examples-dir", examples, "--output-file", "p.json", "--submit"],
         "--submit needs a .yaml"),
        ([*base, "--examples-dir", examples, "--host", "http://kfp"], "only used with --submit"),
        ([*base, "--examples-dir", examples, "--serving-check", "docker"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            run_kubeflow.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, argv


def test_locations_the_pods_cannot_use_are_one_line_errors(tmp_path, capsys):
    examples = str(fake_examples_dir(tmp_path / "examples", CLASSES))
    base = ["--image", IMAGE, "--examples-dir", examples, "--output-file",
            str(tmp_path / "p.yaml")]
    for flags, message in [
        ([], "/pipeline_root is local"),  # the default root, OUTPUT_DIR/pipeline_root
        (["--pipeline-root", str(tmp_path / "root")], "is local: Kubeflow Pipelines"),
        (["--pipeline-root", "ram://root"], "a pipeline root must be in gs:// or s3:// or minio://"),
        (["--pipeline-root", ROOT, "--serving-dir", "s3://bucket/serving", "--output-file",
          str(tmp_path / "p.json")], "s3:// and minio:// locations are for Kubeflow Pipelines"),
        (["--pipeline-root", ROOT, "--output-dir", "minio://bucket/out"],
         "--output-dir minio://bucket/out: TensorFlow"),
        (["--pipeline-root", ROOT, "--output-file", "s3://bucket/p.yaml"], "--output-file s3://"),
    ]:
        assert run_kubeflow.main([*base, *flags]) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (flags, err)
    assert not (tmp_path / "p.yaml").exists()


def test_minio_and_s3_pipeline_roots_compile(tmp_path, capsys):
    # Their artifacts are staged by the KFP launcher (pipeline/kubeflow_entrypoint.py); the
    # serving dir is written by the Pusher itself, so it is a mounted volume here.
    examples = str(fake_examples_dir(tmp_path / "examples", CLASSES))
    for root in ("minio://mlpipeline/v2/artifacts", "s3://bucket/root"):
        out = tmp_path / f"{root.split(':')[0]}.yaml"
        assert run_kubeflow.main(["--image", IMAGE, "--examples-dir", examples, "--pipeline-root",
                                  root, "--serving-dir", "/mnt/serving", "--output-file",
                                  str(out)]) == 0, capsys.readouterr().err
        assert yaml.safe_load(out.read_text())["defaultPipelineRoot"] == root


def test_examples_weights_and_serving_dir_on_minio_compile_with_the_pods_access(
        tmp_path, capsys, s3_store):
    from pipeline import object_store

    examples = "minio://mlpipeline/data/tfrecords/abc"
    local = fake_examples_dir(tmp_path / "examples", CLASSES)
    for split in features.SPLITS:  # an object store has no empty folders
        (local / split / "data.tfrecord").write_bytes(b"")
    object_store.upload(s3_store, local, examples)
    out = tmp_path / "p.yaml"
    argv = ["--image", IMAGE, "--examples-dir", examples, "--pipeline-root",
            "minio://mlpipeline/v2/artifacts", "--serving-dir", "minio://mlpipeline/serving",
            "--base-weights", "minio://mlpipeline/weights/w.h5", "--output-file", str(out)]
    assert run_kubeflow.main(argv) == 0, capsys.readouterr().err
    assert f"examples {examples} (classes {CLASSES})" in capsys.readouterr().out
    pipeline_doc, platform_doc = yaml.safe_load_all(out.read_text())
    spec = json_format.ParseDict(pipeline_doc, kfp_spec.PipelineSpec())  # strict
    platform = json_format.ParseDict(platform_doc, kfp_spec.PlatformSpec())
    by_executor = json_format.MessageToDict(
        platform.platforms["kubernetes"].deployment_spec)["executors"]
    assert set(by_executor) == set(executors(spec))
    for name, executor in executors(spec).items():
        assert [(e.name, e.value) for e in executor.container.env] == [
            ("AWS_ENDPOINT_URL", run_kubeflow.KFP_MINIO_ENDPOINT)], name
        [secret] = by_executor[name]["secretAsEnv"]
        assert secret["secretName"] == run_kubeflow.KFP_MINIO_SECRET
        assert {k["envVar"] for k in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID",
                                                             "AWS_SECRET_ACCESS_KEY"}
    text = out.read_text()
    assert "minio://mlpipeline/serving/image_classifier" in text
    assert "minio://mlpipeline/weights/w.h5" in text
    # kfp's own loader reads both documents.
    assert load_component_from_file(str(out)).platform_spec.platforms["kubernetes"]
    # An s3:// serving dir alone: AWS's endpoint unless one is given.
    argv = ["--image", IMAGE, "--examples-dir", str(local), "--pipeline-root", ROOT,
            "--serving-dir", "s3://bucket/serving", "--s3-secret", "aws-creds",
            "--output-file", str(out)]
    assert run_kubeflow.main(argv) == 0, capsys.readouterr().err
    pipeline_doc, platform_doc = yaml.safe_load_all(out.read_text())
    assert not any(e["container"].get("env")
                   for e in pipeline_doc["deploymentSpec"]["executors"].values())
    assert "aws-creds" in yaml.safe_dump(platform_doc)


def test_object_store_examples_this_command_cannot_read_are_one_line_errors(
        tmp_path, capsys, s3_store, monkeypatch):
    base = ["--image", IMAGE, "--pipeline-root", ROOT, "--output-file", str(tmp_path / "p.yaml")]
    assert run_kubeflow.main([*base, "--examples-dir", "minio://mlpipeline/none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks labels.txt, train/, eval/, test/" in err[0], err
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert run_kubeflow.main([*base, "--examples-dir", "minio://mlpipeline/none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "set AWS_ENDPOINT_URL" in err[0], err


def test_unreachable_object_storage_is_a_one_line_error(tmp_path, capsys):
    # Offline, TensorFlow's GCS client fails at once; online, the bucket does not exist. Either
    # way: one line, no traceback.
    bucket = "gs://tfx-image-transfer-test-no-such-bucket-7f3a"
    assert run_kubeflow.main(["--image", IMAGE, "--pipeline-root", ROOT, "--output-file",
                              str(tmp_path / "p.yaml"), "--examples-dir", f"{bucket}/ex"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and f"{bucket}/ex" in err[0], err


def test_submit_uploads_the_compiled_yaml(tmp_path, monkeypatch, capsys):
    # No Kubeflow here: a stand-in for kfp.Client records what would be sent.
    sent = {}

    class FakeClient:
        def __init__(self, host=None):
            sent["host"] = host

        def create_run_from_pipeline_package(self, pipeline_file, pipeline_root=None):
            sent["spec"], sent["root"] = load_spec(Path(pipeline_file)), pipeline_root
            return argparse.Namespace(run_id="run-123")

    monkeypatch.setattr(kfp, "Client", FakeClient)
    examples = str(fake_examples_dir(tmp_path / "examples", CLASSES))
    assert run_kubeflow.main(["--image", IMAGE, "--examples-dir", examples, "--pipeline-root", ROOT,
                              "--output-file", str(tmp_path / "p.yaml"), "--submit",
                              "--host", "http://kfp.example:8080"]) == 0
    assert sent["host"] == "http://kfp.example:8080" and sent["root"] == ROOT
    assert sent["spec"].default_pipeline_root == ROOT
    assert "started run run-123" in capsys.readouterr().out


def test_cli_serving_check_flag_picks_the_step(tmp_path, capsys):
    examples = str(fake_examples_dir(tmp_path / "examples", CLASSES))
    for mode, node in CHECK_NODE.items():
        out = tmp_path / f"{mode}.yaml"
        flags = [] if mode == SESSION_CHECK else ["--serving-check", mode]  # session: default
        assert run_kubeflow.main(["--image", IMAGE, "--examples-dir", examples,
                                  "--pipeline-root", ROOT, "--output-file", str(out),
                                  *flags]) == 0
        tasks = set(load_spec(out).root.dag.tasks)
        assert node in tasks and not (set(CHECK_NODE.values()) - {node}) & tasks
        printed = capsys.readouterr().out
        assert f"serving check {node}" in printed
    assert f"InfraValidator on {TF_SERVING_IMAGE}" in printed


@pytest.mark.slow
def test_without_baseline_the_spec_has_no_baseline_task(tmp_path):
    examples = str(fake_examples_dir(tmp_path / "examples", CLASSES))
    result = run_kubeflow_cli("--image", IMAGE, "--examples-dir", examples,
                              "--pipeline-root", ROOT, "--no-compare-to-baseline",
                              "--output-dir", str(tmp_path / "out"),
                              "--output-file", str(tmp_path / "spec.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    spec = load_spec(tmp_path / "spec.yaml")
    tasks = set(spec.root.dag.tasks)
    assert "ServedBaseline" not in tasks
    assert {"Evaluator", "Pusher", "Trainer"} <= tasks
