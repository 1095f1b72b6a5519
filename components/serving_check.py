"""The serving check before the push, in the spirit of TFX's InfraValidator.

`ServingCheck` loads the Trainer's candidate the way TensorFlow Serving does (a TF1 session,
the SavedModel's saver restore, the init op: `serving.server.loader.load_like_tf_serving`),
replays its warmup file, then sends what clients and TFX's InfraValidator send: one
`serving_default` Predict with a few test-split images, and the `from_examples` Predict requests
that InfraValidator's own request builder makes from the same split. It writes a standard
`InfraBlessing` marked as InfraValidator marks it (the `blessed` custom property, an empty
INFRA_BLESSED or INFRA_NOT_BLESSED file), so the stock Pusher's `infra_blessing` input gates the
push; the `reason` custom property says why a model was refused.

`KubeflowInfraValidator` is TFX's InfraValidator itself, made compilable and runnable on
Kubeflow Pipelines v2, where it starts the real tensorflow/serving image in a pod.

No `from __future__ import annotations` here: TFX reads the component signature's annotations.
"""

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tfx import types
from tfx.components.infra_validator import executor as infra_validator_executor
from tfx.components.infra_validator import request_builder
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.components.base import base_component, base_driver, executor_spec
from tfx.proto import infra_validator_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.types.standard_artifacts import Examples, InfraBlessing, Model
from tfx.utils import io_utils, path_utils

from contract.interface import EXAMPLES_SIGNATURE, IMAGES_INPUT, MODEL_NAME, SERVING_SIGNATURE
from serving.errors import ServingError
from serving.server.loader import LoadError, SessionModel, load_like_tf_serving
from trainer.warmup import read_encoded_images

LOG = logging.getLogger("components.serving_check")

# As TFX's InfraValidator marks its blessing (tfx/components/infra_validator/executor.py).
BLESSED_KEY = "blessed"
BLESSED_FILE = "INFRA_BLESSED"
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"
# This check's own custom properties on the InfraBlessing.
REASON_KEY = "reason"
WARMUP_KEY = "warmup_requests"
REQUESTS_KEY = "requests"

CHECK_SPLIT = "test"
CHECK_EXAMPLES = 3  # test-split examples per check: one images request, one request per example
_MAX_REASON = 2000


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """What the check found: blessed, or the one-line reason it is not."""

    blessed: bool
    reason: str | None = None
    warmup_requests: int = 0
    requests: int = 0  # requests answered after the warmup


def images_request(images: Sequence[bytes]) -> predict_pb2.PredictRequest:
    """One `serving_default` Predict holding the images, as a client sends them.

    Args:
      images: encoded images (JPEG/PNG/GIF/BMP bytes).

    Returns:
      The request.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = SERVING_SIGNATURE
    request.inputs[IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
    return request


def example_requests(model: types.Artifact, examples: types.Artifact,
                     num_examples: int = CHECK_EXAMPLES) -> list[predict_pb2.PredictRequest]:
    """The `from_examples` requests TFX's InfraValidator sends (its own request builder).

    Args:
      model: the Trainer's Model artifact (its signatures tell the builder the input name).
      examples: the Examples artifact; the first `num_examples` of its test split are used.
      num_examples: how many examples, one request each.

    Returns:
      One Predict request per serialized tf.Example.

    Raises:
      ValueError: the model has no `from_examples` signature taking serialized examples, or the
        split is missing or empty.
    """
    spec = infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
            signature_names=[EXAMPLES_SIGNATURE]),
        split_name=CHECK_SPLIT, num_examples=num_examples)
    return request_builder.build_requests(MODEL_NAME, model, examples, spec)


def check_version(model_dir: str, requests: Callable[[], Iterable[predict_pb2.PredictRequest]]
                  ) -> CheckResult:
    """Loads a SavedModel as TF Serving does, replays its warmup file, sends the requests.

    Args:
      model_dir: the SavedModel directory (one version).
      requests: gives the requests to send once the model is loaded, in order; building one
        may fail too (e.g. for a missing signature), which then is the reason.

    Returns:
      Blessed if the load, every warmup request and every request succeeded; otherwise not,
      with the first failure as the reason.
    """
    try:
        model, warmup = load_like_tf_serving(model_dir)
    except LoadError as e:
        return CheckResult(False, _one_line(str(e)))
    answered = 0
    try:
        for request in requests():
            _send(model, request, answered + 1)
            answered += 1
    except (ServingError, ValueError) as e:
        return CheckResult(False, _one_line(str(e)), warmup, answered)
    finally:
        model.close()
    return CheckResult(True, None, warmup, answered)


def _send(model: SessionModel, request: predict_pb2.PredictRequest, number: int) -> None:
    signature = request.model_spec.signature_name or SERVING_SIGNATURE
    try:
        model.run_request(request)
    except ServingError as e:
        raise ServingError(f"request {number} ({signature}) failed: {e}", e.code) from e


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_REASON else line[:_MAX_REASON - 3] + "..."


def mark_blessing(blessing: types.Artifact, result: CheckResult) -> None:
    """Marks an InfraBlessing as InfraValidator does and records the check's details.

    Args:
      blessing: the output artifact (its uri exists).
      result: the check's outcome.
    """
    marker = BLESSED_FILE if result.blessed else NOT_BLESSED_FILE
    io_utils.write_string_file(os.path.join(blessing.uri, marker), "")
    blessing.set_int_custom_property(BLESSED_KEY, int(result.blessed))
    blessing.set_int_custom_property(WARMUP_KEY, result.warmup_requests)
    blessing.set_int_custom_property(REQUESTS_KEY, result.requests)
    if result.reason:
        blessing.set_string_custom_property(REASON_KEY, result.reason)


def blessing_entry(properties: Mapping[str, Any]) -> dict[str, Any]:
    """An InfraBlessing (this check's or InfraValidator's) as the summary and report show it.

    Args:
      properties: the artifact's MLMD custom_properties (`artifact.mlmd_artifact.
        custom_properties` of a TFX artifact, or of an artifact read from ML Metadata).

    Returns:
      {"blessed": bool, "reason": str | None, "warmup_requests": int | None,
       "requests": int | None}; None where the producer did not record it (InfraValidator).
    """
    def recorded(key: str, field: str) -> Any:
        """The custom property `key`'s `field` value, or None if it is not set."""
        return getattr(properties[key], field) if key in properties else None

    blessed = recorded(BLESSED_KEY, "int_value")
    return {"blessed": None if blessed is None else bool(blessed),
            "reason": recorded(REASON_KEY, "string_value"),
            WARMUP_KEY: recorded(WARMUP_KEY, "int_value"),
            REQUESTS_KEY: recorded(REQUESTS_KEY, "int_value")}


def describe(entry: dict[str, Any] | None) -> str:
    """One line for the run summary and the report page.

    Args:
      entry: a `blessing_entry`-shaped dict, or None when no check ran.

    Returns:
      E.g. "blessed (loaded as TF Serving loads it; 4 warmup requests and 4 requests
      answered)" or "NOT blessed: <reason>".
    """
    if entry is None or entry.get("blessed") is None:
        return "not run"
    if not entry["blessed"]:
        return f"NOT blessed: {entry.get('reason') or 'the model server did not serve it'}"
    if entry.get("warmup_requests") is None:
        return "blessed (served by TF Serving)"
    return (f"blessed (loaded as TF Serving loads it; {entry['warmup_requests']} warmup "
            f"requests and {entry['requests']} requests answered)")


@component
def ServingCheck(  # noqa: N802 (TFX component names are classes)
    model: InputArtifact[Model],
    examples: InputArtifact[Examples],
    blessing: OutputArtifact[InfraBlessing],
    num_examples: Parameter[int] = CHECK_EXAMPLES,
    code_fingerprint: Parameter[str] = "",
) -> None:
    """Blesses the model if TF Serving would load it and answer real requests.

    Args:
      model: the Trainer's Model.
      examples: the Examples; the requests come from its test split.
      blessing: the InfraBlessing to mark (blessed or not, with the reason).
      num_examples: test examples: one images request holds them, then one from_examples
        request each.
      code_fingerprint: a hash of the loader's sources; it only enters the cache key, so that
        a changed loader checks the model again.
    """
    del code_fingerprint  # the cache key's business only
    model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    split = os.path.join(artifact_utils.get_split_uri([examples], CHECK_SPLIT), "*")

    def requests() -> Iterator[predict_pb2.PredictRequest]:
        """The images request, then the from_examples requests (built after it passed)."""
        yield images_request(read_encoded_images(split, num_examples))
        yield from example_requests(model, examples, num_examples)  # built once the first passed

    result = check_version(model_dir, requests)
    if result.blessed:
        LOG.info("Serving check passed: %s", describe(dataclasses.asdict(result)))
    else:
        LOG.warning("Serving check failed, the model will not be pushed: %s", result.reason)
    mark_blessing(blessing, result)


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def ensure_kfp_namespace(namespace_file: str | None = None) -> str | None:
    """Sets KFP_NAMESPACE from the pod's service account when it is unset.

    TFX's KubernetesRunner refuses to start ("should be running inside KFP") without
    KFP_POD_NAME and KFP_NAMESPACE; Kubeflow Pipelines' v2 backend sets only KFP_POD_NAME (and
    KFP_POD_UID) in the executor container.

    Args:
      namespace_file: where to read it (default: SERVICE_ACCOUNT_NAMESPACE, which Kubernetes
        mounts into every pod with a service account token).

    Returns:
      The namespace in the environment afterwards, or None.
    """
    namespace_file = namespace_file or SERVICE_ACCOUNT_NAMESPACE
    if not os.environ.get("KFP_NAMESPACE") and os.path.isfile(namespace_file):
        with open(namespace_file, encoding="utf-8") as f:
            os.environ["KFP_NAMESPACE"] = f.read().strip()
    return os.environ.get("KFP_NAMESPACE") or None


class KubeflowInfraValidatorExecutor(infra_validator_executor.Executor):
    """TFX's InfraValidator executor, runnable on Kubeflow Pipelines v2 (see
    `ensure_kfp_namespace`)."""

    def Do(self, input_dict: dict[str, list[types.Artifact]],  # noqa: N802 (TFX's name)
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        """Sets KFP_NAMESPACE if it is unset, then runs TFX's InfraValidator executor."""
        ensure_kfp_namespace()
        super().Do(input_dict, output_dict, exec_properties)


class KubeflowInfraValidator(base_component.BaseComponent):
    """TFX's InfraValidator (its spec, inputs, parameters and executor) for Kubeflow Pipelines v2.

    TFX 1.21's KubeflowV2DagRunner refuses to compile any node that is an instance of
    `tfx.components.InfraValidator` (step_builder.py raises NotImplementedError;
    tensorflow/tfx#5512); this class is the same component under another class, so the runner
    compiles it like any other container step. Its executor is TFX's, after
    `ensure_kfp_namespace`.
    """

    SPEC_CLASS = standard_component_specs.InfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(KubeflowInfraValidatorExecutor)
    DRIVER_CLASS = base_driver.BaseDriver

    def __init__(self, model: types.BaseChannel, serving_spec: infra_validator_pb2.ServingSpec,
                 examples: types.BaseChannel | None = None,
                 request_spec: infra_validator_pb2.RequestSpec | None = None,
                 validation_spec: infra_validator_pb2.ValidationSpec | None = None):
        """As `tfx.components.InfraValidator`: outputs["blessing"] is the InfraBlessing.

        Args:
          model: the Trainer's model channel.
          serving_spec: the serving binary (TF Serving image) and platform (Kubernetes).
          examples: where requests come from (with request_spec: LOAD_AND_QUERY mode).
          request_spec: which signatures, split and how many examples.
          validation_spec: load deadline and tries.
        """
        super().__init__(spec=standard_component_specs.InfraValidatorSpec(
            model=model, examples=examples,
            blessing=types.Channel(type=InfraBlessing),
            serving_spec=serving_spec, validation_spec=validation_spec,
            request_spec=request_spec))
