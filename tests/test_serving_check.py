"""The serving check before the push: TF Serving's way of loading, on real exports (no training).

The check blesses what TF Serving serves and refuses, with the reason, what it would not: a
SavedModel whose variables the session loader cannot find, a warmup file with a bad request.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras
import pytest
import tensorflow as tf
from kubernetes import client as k8s
from tfx.components.infra_validator import executor as tfx_infra_validator
from tfx.components.infra_validator import request_builder
from tfx.dsl.components.base import base_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import kube_utils, proto_utils

from components import serving_check as SC
from components.pusher import IdempotentPusherExecutor
from contract import features
from contract.interface import EXAMPLES_INPUT, EXAMPLES_SIGNATURE, WARMUP_FILE
from tests.conftest import (
    SMALL_IMAGE_SIZE,
    small_model_config,
    validation_photos,
)
from tests.lenient_export import export_lenient_only
from trainer.model import build_model
from trainer.warmup import write_warmup_requests


def examples_artifact(root: Path, count: int = 6) -> standard_artifacts.Examples:
    """An Examples artifact as ImportExampleGen writes it: gzipped tf.Examples per split."""
    photos = validation_photos()
    picked = photos[: count // 2] + photos[-(count // 2):]
    split = root / "Split-test"
    split.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split / "data_tfrecord-00000-of-00001.gz"), "GZIP") as writer:
        for path, name in picked:
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[path.read_bytes()])),
                features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(name == "dogs")])),
            })).SerializeToString())
    artifact = standard_artifacts.Examples()
    artifact.uri = str(root)
    artifact.split_names = artifact_utils.encode_split_names(["test"])
    return artifact


def model_artifact(root: Path, version_dir: Path) -> standard_artifacts.Model:
    """A Model artifact whose Format-Serving dir is version_dir (linked: it stays read-only)."""
    root.mkdir(parents=True)
    os.symlink(version_dir, root / "Format-Serving")
    artifact = standard_artifacts.Model()
    artifact.uri = str(root)
    return artifact


def run_check(tmp_path: Path, version_dir: Path) -> standard_artifacts.InfraBlessing:
    """Runs the ServingCheck component's executor; returns its marked output."""
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri)
    executor = SC.ServingCheck.EXECUTOR_SPEC.executor_class()
    executor.Do({"model": [model_artifact(tmp_path / "model", version_dir)],
                 "examples": [examples_artifact(tmp_path / "examples")]},
                {"blessing": [blessing]}, {"num_examples": 3})
    return blessing


def markers(blessing: standard_artifacts.InfraBlessing) -> list[str]:
    return sorted(os.listdir(blessing.uri))


@pytest.fixture(scope="module")
def lenient_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export TF2 loads and TF Serving cannot serve (no warmup file: a bare first request
    is what fails)."""
    keras.utils.set_random_seed(3)
    model = build_model(2, small_model_config())
    return Path(export_lenient_only(model, SMALL_IMAGE_SIZE,
                                    str(tmp_path_factory.mktemp("lenient") / "1")))


def test_blesses_a_real_export_and_records_what_it_sent(exported_model, tmp_path):
    blessing = run_check(tmp_path, exported_model.version_dir)
    assert markers(blessing) == ["INFRA_BLESSED"]
    entry = SC.blessing_entry(blessing.mlmd_artifact.custom_properties)
    # 3 single-image warmup requests + 1 batch; then 1 images request + 3 from_examples ones.
    assert entry == {"blessed": True, "reason": None, "warmup_requests": 4, "requests": 4}
    assert SC.describe(entry) == ("blessed (loaded as TF Serving loads it; 4 warmup requests "
                                  "and 4 requests answered)")


def test_refuses_a_lenient_only_export_with_the_loaders_reason(lenient_export, tmp_path):
    blessing = run_check(tmp_path, lenient_export)
    assert markers(blessing) == ["INFRA_NOT_BLESSED"]
    entry = SC.blessing_entry(blessing.mlmd_artifact.custom_properties)
    assert entry["blessed"] is False and entry["requests"] == 0
    assert "Could not find variable" in entry["reason"]
    assert entry["reason"].startswith("request 1 (serving_default) failed:")
    assert "\n" not in entry["reason"]
    assert SC.describe(entry).startswith("NOT blessed: request 1 (serving_default) failed:")


def test_refuses_a_version_whose_warmup_file_holds_a_bad_request(exported_model, tmp_path):
    version = tmp_path / "bad_warmup" / "1"
    shutil.copytree(exported_model.version_dir, version)
    write_warmup_requests(str(version), [b"not an image at all"], "image_classifier")
    blessing = run_check(tmp_path, version)
    assert markers(blessing) == ["INFRA_NOT_BLESSED"]
    reason = SC.blessing_entry(blessing.mlmd_artifact.custom_properties)["reason"]
    served = tmp_path / "model" / "Format-Serving"  # the Model artifact's, linked to version
    # The served graph refuses bytes of none of its formats before decoding them.
    assert reason.startswith(f"warmup request 1 in {served / WARMUP_FILE} failed: assertion "
                             "failed: [not an image: expected JPEG, PNG, GIF or BMP"), reason
    assert "\n" not in reason


def test_refuses_a_model_without_the_from_examples_signature(exported_model, tmp_path):
    # The serving_default signature alone: what InfraValidator's request builder cannot use.
    imported = tf.saved_model.load(str(exported_model.version_dir))
    version = tmp_path / "images_only" / "1"
    tf.saved_model.save(imported, str(version),
                        signatures={"serving_default": imported.signatures["serving_default"]})
    result = SC.check_version(str(version), lambda: SC.example_requests(
        model_artifact(tmp_path / "model", version), examples_artifact(tmp_path / "examples")))
    assert not result.blessed and "from_examples could not be found" in result.reason


def test_from_examples_requests_are_the_ones_infra_validator_builds(exported_model, tmp_path):
    model = model_artifact(tmp_path / "model", exported_model.version_dir)
    requests = SC.example_requests(model, examples_artifact(tmp_path / "examples"), 2)
    assert len(requests) == 2  # TFX's builder: one serialized tf.Example per Predict request
    for request in requests:
        assert request.model_spec.signature_name == EXAMPLES_SIGNATURE
        assert list(request.inputs) == [EXAMPLES_INPUT]
        (record,) = tf.make_ndarray(request.inputs[EXAMPLES_INPUT])
        example = tf.train.Example.FromString(record)
        assert example.features.feature[features.IMAGE_KEY].bytes_list.value
    # The signature is the kind the builder turns into Predict requests: one string [None] input.
    signatures = request_builder._parse_saved_model_signatures(  # noqa: SLF001 (TFX's own check)
        str(exported_model.version_dir), [], [EXAMPLES_SIGNATURE])
    assert signatures[EXAMPLES_SIGNATURE].method_name == tf.saved_model.PREDICT_METHOD_NAME


def test_marks_the_blessing_as_tfx_infra_validator_does():
    # The Pusher reads `blessed`; TFX's own executor writes these markers.
    assert SC.BLESSED_KEY == tfx_infra_validator._BLESSED_KEY  # noqa: SLF001
    assert SC.BLESSED_FILE == tfx_infra_validator._BLESSED_FILENAME  # noqa: SLF001
    assert SC.NOT_BLESSED_FILE == tfx_infra_validator._NOT_BLESSED_FILENAME  # noqa: SLF001


def test_the_pusher_pushes_nothing_the_check_refused(lenient_export, tmp_path):
    refused = run_check(tmp_path / "check", lenient_export)
    model_blessing = standard_artifacts.ModelBlessing()
    model_blessing.uri = str(tmp_path / "evaluator")
    model_blessing.set_int_custom_property("blessed", 1)  # the Evaluator was happy
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    serving = tmp_path / "serving" / "image_classifier"
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving)))
    IdempotentPusherExecutor().Do(
        {"model": [model_artifact(tmp_path / "model", lenient_export)],
         "model_blessing": [model_blessing], "infra_blessing": [refused]},
        {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(destination), "custom_config": "null"})
    assert pushed.get_int_custom_property("pushed") == 0
    assert not serving.exists()


def test_kfp_namespace_comes_from_the_service_account(tmp_path, monkeypatch):
    namespace = tmp_path / "namespace"
    namespace.write_text("kubeflow-user\n")
    monkeypatch.delenv("KFP_NAMESPACE", raising=False)
    assert SC.ensure_kfp_namespace(str(tmp_path / "missing")) is None
    assert SC.ensure_kfp_namespace(str(namespace)) == "kubeflow-user"
    assert os.environ["KFP_NAMESPACE"] == "kubeflow-user"
    monkeypatch.setenv("KFP_NAMESPACE", "given")
    assert SC.ensure_kfp_namespace(str(namespace)) == "given"  # never overridden


def test_describe_says_why_or_that_nothing_ran():
    assert SC.describe(None) == "not run"
    assert SC.describe({"blessed": False, "reason": "cannot load x"}) == (
        "NOT blessed: cannot load x")
    # TFX's InfraValidator (the Kubernetes mode) records no details.
    assert SC.describe({"blessed": True, "reason": None, "warmup_requests": None,
                        "requests": None}) == "blessed (served by TF Serving)"
    assert json.dumps(SC.describe({"blessed": False, "reason": None}))


class FakeCoreV1:
    """The Kubernetes API as TFX's KubernetesRunner uses it, in a cluster where the model
    server pod fails at once (no cluster here: this checks what would be asked of one)."""

    EXECUTOR_POD = "tfx-pipeline-infravalidator-1234"

    def __init__(self):
        self.created: list[tuple[str, k8s.V1Pod]] = []
        self.deleted: list[str] = []

    def read_namespaced_pod(self, name: str, namespace: str) -> k8s.V1Pod:
        if name == self.EXECUTOR_POD:  # the pod TFX's executor runs in, as KFP v2 makes it
            return k8s.V1Pod(
                api_version="v1", kind="Pod",
                metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, uid="uid-1"),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="main", volume_mounts=[])],
                                   service_account_name="pipeline-runner"))
        return k8s.V1Pod(status=k8s.V1PodStatus(phase="Failed"))

    def create_namespaced_pod(self, namespace: str, body: k8s.V1Pod) -> k8s.V1Pod:
        self.created.append((namespace, body))
        return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=f"model-server-{len(self.created)}"))

    def delete_namespaced_pod(self, name: str, namespace: str) -> None:
        self.deleted.append(name)

    def read_namespaced_pod_log(self, **kwargs) -> str:
        return ""


def run_kubernetes_validator(executor_class, model, examples, tmp_path):
    from pipeline.config import KUBERNETES_CHECK, PipelineConfig
    from pipeline.definition import create_pipeline

    pipeline = create_pipeline(PipelineConfig(output_dir=str(tmp_path / "out")),
                               str(tmp_path), ["cats", "dogs"], serving_check=KUBERNETES_CHECK)
    node = next(c for c in pipeline.components if c.id == "InfraValidator")
    exec_properties = dict(node.exec_properties)  # the protos as JSON, as the pod gets them
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / f"blessing-{executor_class.__name__}")
    os.makedirs(blessing.uri)
    context = base_executor.BaseExecutor.Context(tmp_dir=str(tmp_path / "executor_tmp"),
                                                 unique_id="1")
    executor_class(context).Do({"model": [model], "examples": [examples]},
                               {"blessing": [blessing]}, exec_properties)
    return blessing, json.loads(exec_properties["validation_spec"])["num_tries"]


def test_kubernetes_mode_runs_tfx_infra_validator_in_a_kfp_v2_pod(exported_model, tmp_path,
                                                                    monkeypatch):
    from pipeline.config import TF_SERVING_IMAGE

    api = FakeCoreV1()
    monkeypatch.setattr(kube_utils, "is_inside_cluster", lambda: True)
    monkeypatch.setattr(kube_utils, "make_core_v1_api", lambda: api)
    # What Kubeflow Pipelines v2 sets in the executor container: KFP_POD_NAME, no namespace.
    monkeypatch.setenv("KFP_POD_NAME", FakeCoreV1.EXECUTOR_POD)
    monkeypatch.delenv("KFP_NAMESPACE", raising=False)
    namespace = tmp_path / "namespace"
    namespace.write_text("kubeflow-user")
    monkeypatch.setattr(SC, "SERVICE_ACCOUNT_NAMESPACE", str(namespace))
    model = model_artifact(tmp_path / "model", exported_model.version_dir)
    examples = examples_artifact(tmp_path / "examples")

    # TFX's own executor gives up before creating any pod (it wants KFP_NAMESPACE).
    stock, _ = run_kubernetes_validator(tfx_infra_validator.Executor, model, examples, tmp_path)
    assert api.created == [] and markers(stock) == ["INFRA_NOT_BLESSED"]

    blessing, tries = run_kubernetes_validator(SC.KubeflowInfraValidatorExecutor, model,
                                               examples, tmp_path)
    assert len(api.created) == tries and len(api.deleted) == tries  # one pod per try, removed
    namespace_used, pod = api.created[0]
    assert namespace_used == "kubeflow-user"
    (container,) = pod.spec.containers
    assert container.image == TF_SERVING_IMAGE
    env = {e.name: e.value for e in container.env}
    assert env["MODEL_NAME"] == "image_classifier"
    assert Path(env["MODEL_BASE_PATH"]).parent == tmp_path / "executor_tmp"  # the copied model
    assert pod.spec.service_account_name == "pipeline-runner"
    assert pod.metadata.owner_references[0].name == FakeCoreV1.EXECUTOR_POD
    # The fake cluster's model server pod failed: validated, and not blessed.
    assert markers(blessing) == ["INFRA_NOT_BLESSED"]
    assert blessing.get_int_custom_property("blessed") == 0


def test_a_pipeline_run_pushes_nothing_the_check_refused_and_its_summary_says_why(
        lenient_export, tmp_path):
    # A real (tiny) LocalDagRunner run: the pipeline's check and Pusher on an imported model
    # that TF Serving cannot serve; the summary is read back from ML Metadata.
    from tfx import v1 as tfx
    from tfx.dsl.components.base import executor_spec

    from ingestion.convert import IngestResult
    from pipeline.config import SESSION_CHECK, PipelineConfig
    from pipeline.definition import serving_check_component
    from pipeline.summary import collect_summary, format_summary

    cfg = PipelineConfig(output_dir=str(tmp_path / "out"))
    examples = examples_artifact(tmp_path / "examples")
    model_dir = model_artifact(tmp_path / "model", lenient_export).uri
    model = tfx.dsl.Importer(source_uri=model_dir, artifact_type=standard_artifacts.Model
                             ).with_id("model_importer")
    data = tfx.dsl.Importer(source_uri=examples.uri, artifact_type=standard_artifacts.Examples,
                            properties={"split_names": examples.split_names}
                            ).with_id("examples_importer")
    check = serving_check_component(SESSION_CHECK, model.outputs["result"],
                                    data.outputs["result"], cfg.model_name)
    pusher = tfx.components.Pusher(
        model=model.outputs["result"], infra_blessing=check.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(filesystem=tfx.proto.PushDestination.Filesystem(
            base_directory=cfg.serving_model_dir)),
        custom_executor_spec=executor_spec.ExecutorClassSpec(IdempotentPusherExecutor))
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name, pipeline_root=cfg.pipeline_root,
        components=[model, data, check, pusher],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            cfg.metadata_path)))

    assert not os.path.exists(cfg.serving_model_dir)
    ingested = IngestResult(str(tmp_path), {"per_split_total": {"test": 6}, "skipped": 0,
                                             "classes": ["cats", "dogs"]}, True)
    summary = collect_summary(cfg, ingested, 1.0)
    assert {c["component"]: c["status"] for c in summary["components"]}["Pusher"] == "COMPLETE"
    check_entry = summary["serving_check"]
    assert check_entry["component"] == "ServingCheck" and check_entry["blessed"] is False
    assert "Could not find variable" in check_entry["reason"]
    assert summary["pushed_to"] is None
    text = format_summary(summary)
    assert f"serving check (ServingCheck): NOT blessed: {check_entry['reason']}" in text
    assert "pushed to: not pushed (not blessed by the serving check)" in text
