"""Python clients for TF Serving (and the local server, serving.server): gRPC and REST, one API.

    from serving.client import GrpcClient, RestClient
    with GrpcClient("localhost:8500") as client:          # or RestClient("http://localhost:8501")
        for p in client.predict([open("cat.jpg", "rb").read()]):
            print(p.class_name, p.probability)

Images are sent as raw encoded bytes, several in one batched request; the model decodes them.
Failures raise serving.errors.ServingError subclasses (NotFound, InvalidArgument, Unavailable,
DeadlineExceeded, RequestTooLarge, ...). The command line is `tfx-image-transfer-client`.
"""

from __future__ import annotations

import base64
import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import grpc
import requests

from contract.interface import (
    CLASS_INDEX,
    CLASS_NAME,
    IMAGES_INPUT,
    MODEL_NAME,
    PROBABILITIES,
    SERVING_SIGNATURE,
)
from serving.constants import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT_SECONDS
from serving.errors import (
    DeadlineExceeded,
    RequestTooLarge,
    ServingError,
    Unavailable,
    code_name,
    error_for_code,
    error_for_http,
)
from serving.image_formats import check_image


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the predicted class, its probability, and all probabilities."""

    class_name: str
    class_index: int
    probability: float
    probabilities: list[float]
    model_version: int | None = None  # gRPC answers name the version; REST ones do not


@dataclass(frozen=True)
class VersionStatus:
    """One version's entry in GetModelStatus."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


class ServingClient(ABC):
    """What both protocols offer: predict, status and metadata of one model.

    version or label (not both) pins the model version; by default the server's latest answers.
    timeout is in seconds per call; requests larger than max_request_bytes are not sent.
    """

    def __init__(self, model_name: str = MODEL_NAME, version: int | None = None,
                 label: str | None = None, signature_name: str = SERVING_SIGNATURE,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        if version is not None and label:
            raise ValueError("give a version or a label, not both")
        self.model_name = model_name
        self.version = version
        self.label = label
        self.signature_name = signature_name
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes

    def predict(self, images: Sequence[bytes],
                names: Sequence[str] | None = None) -> list[Prediction]:
        """Classifies encoded JPEG/PNG/GIF/BMP images in one request, in order.

        Args:
          images: the encoded images.
          names: what errors call each image (e.g. its file); default "image <index>".

        Returns:
          One Prediction per image.

        Raises:
          InvalidArgument: an image is not JPEG/PNG/GIF/BMP (checked before sending).
          ServingError: the request failed (see serving.errors).
        """
        if not images:
            return []
        for i, image in enumerate(images):
            check_image(image, names[i] if names else f"image {i}")
        outputs, version = self._predict(images)
        probabilities = outputs[PROBABILITIES]
        return [Prediction(class_name=name, class_index=int(index),
                           probability=float(probs[int(index)]),
                           probabilities=[float(p) for p in probs], model_version=version)
                for name, index, probs in zip(outputs[CLASS_NAME], outputs[CLASS_INDEX],
                                              probabilities, strict=True)]

    def _check_size(self, size: int) -> None:
        if size > self.max_request_bytes:
            raise RequestTooLarge(f"request of {size} bytes is larger than the maximum of "
                                  f"{self.max_request_bytes} bytes (max_request_bytes); send "
                                  "fewer images per request")

    @abstractmethod
    def _predict(self, images: Sequence[bytes]) -> tuple[dict[str, list], int | None]:
        """Outputs (class names as str) and the answering version, if the protocol says."""

    @abstractmethod
    def status(self) -> list[VersionStatus]:
        """The model's versions and their states (or the pinned version's).

        Returns:
          One VersionStatus per version, in the server's order.
        """

    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """GetModelMetadata as TF Serving's REST API prints it: model_spec and signature_def.

        Returns:
          {"model_spec": {...}, "metadata": {"signature_def": {"signature_def": {...}}}},
          proto field names, every SignatureDef (__saved_model_init_op included).
        """

    @abstractmethod
    def close(self) -> None:
        """Releases the connection."""

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.cache
def _grpc_apis() -> SimpleNamespace:
    # tensorflow-serving-api's protos import TensorFlow (seconds): only gRPC clients pay it.
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    return SimpleNamespace(tf=tf, json_format=json_format, predict_pb2=predict_pb2,
                           metadata_pb2=get_model_metadata_pb2, status_pb2=get_model_status_pb2,
                           prediction_grpc=prediction_service_pb2_grpc,
                           model_grpc=model_service_pb2_grpc)


class GrpcClient(ServingClient):
    """TF Serving's gRPC API (PredictionService, ModelService) at target "host:port"."""

    def __init__(self, target: str = "localhost:8500", **kwargs: Any):
        super().__init__(**kwargs)
        self.target = target
        self._apis = _grpc_apis()
        limit = self.max_request_bytes
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", -1)])
        self._prediction = self._apis.prediction_grpc.PredictionServiceStub(self._channel)
        self._model = self._apis.model_grpc.ModelServiceStub(self._channel)

    def _spec(self, spec: Any, signature: bool = False) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        elif self.label:
            spec.version_label = self.label
        if signature:
            spec.signature_name = self.signature_name

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE:
                raise Unavailable(f"cannot reach TF Serving at {self.target} (gRPC): "
                                  f"{details}") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(f"no answer from {self.target} within {self.timeout} s"
                                       ) from None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
                raise RequestTooLarge(f"{self.target} refused the request: {details}") from None
            raise error_for_code(code, details) from None

    def _predict(self, images: Sequence[bytes]) -> tuple[dict[str, list], int | None]:
        request = self._apis.predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature=True)
        request.inputs[IMAGES_INPUT].CopyFrom(
            self._apis.tf.make_tensor_proto(list(images), dtype=self._apis.tf.string))
        self._check_size(request.ByteSize())
        response = self._call(self._prediction.Predict, request)
        outputs = {name: self._apis.tf.make_ndarray(tensor).tolist()
                   for name, tensor in response.outputs.items()}
        _require_outputs(outputs)
        outputs[CLASS_NAME] = [n.decode() for n in outputs[CLASS_NAME]]
        return outputs, response.model_spec.version.value

    def status(self) -> list[VersionStatus]:
        """The model's versions and their states, from ModelService.GetModelStatus.

        Returns:
          One VersionStatus per version, in the server's order.
        """
        request = self._apis.status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self._model.GetModelStatus, request)
        state_names = self._apis.status_pb2.ModelVersionStatus.State
        return [VersionStatus(s.version, state_names.Name(s.state),
                              code_name(s.status.error_code), s.status.error_message)
                for s in response.model_version_status]

    def metadata(self) -> dict[str, Any]:
        """GetModelMetadata over gRPC, converted to the REST API's JSON.

        Returns:
          As ServingClient.metadata.
        """
        request = self._apis.metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self._prediction.GetModelMetadata, request)
        signature_map = self._apis.metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        to_dict = functools.partial(self._apis.json_format.MessageToDict,
                                    always_print_fields_with_no_presence=True,
                                    preserving_proto_field_name=True)
        return {"model_spec": to_dict(response.model_spec),
                "metadata": {"signature_def": to_dict(signature_map)}}

    def close(self) -> None:
        """Closes the gRPC channel."""
        self._channel.close()


class RestClient(ServingClient):
    """TF Serving's REST API at base_url "http://host:port" (needs no TensorFlow)."""

    def __init__(self, base_url: str = "http://localhost:8501", **kwargs: Any):
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()

    def _model_url(self) -> str:
        url = f"{self.base_url}/v1/models/{self.model_name}"
        if self.version is not None:
            return f"{url}/versions/{self.version}"
        return f"{url}/labels/{self.label}" if self.label else url

    def _request(self, method: str, url: str, body: bytes | None = None) -> Any:
        try:
            response = self._session.request(
                method, url, data=body, timeout=self.timeout,
                headers={"Content-Type": "application/json"} if body is not None else None)
        except requests.Timeout:
            raise DeadlineExceeded(f"no answer from {self.base_url} within {self.timeout} s"
                                   ) from None
        except requests.ConnectionError as e:
            raise Unavailable(f"cannot reach TF Serving at {self.base_url} (REST): "
                              f"{_connection_problem(e)}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise error_for_http(response.status_code,
                                 message or f"HTTP {response.status_code} from {url}")
        if payload is None:
            raise ServingError(f"{url} answered with non-JSON content")
        return payload

    def _predict(self, images: Sequence[bytes]) -> tuple[dict[str, list], int | None]:
        instances = [{"b64": base64.b64encode(image).decode("ascii")} for image in images]
        body = json.dumps({"signature_name": self.signature_name,
                           "instances": instances}).encode()
        self._check_size(len(body))
        rows = self._request("POST", f"{self._model_url()}:predict", body)["predictions"]
        if not rows or not isinstance(rows[0], dict):
            raise ServingError(f"signature {self.signature_name} answered {rows!r:.200}")
        outputs = {name: [row[name] for row in rows] for name in rows[0]}
        _require_outputs(outputs)
        return outputs, None

    def status(self) -> list[VersionStatus]:
        """The model's versions and their states, from GET /v1/models/<name>[/versions/<v>].

        Returns:
          One VersionStatus per version, in the server's order.
        """
        payload = self._request("GET", self._model_url())
        return [VersionStatus(int(s["version"]), s["state"],
                              s.get("status", {}).get("error_code", "OK"),
                              s.get("status", {}).get("error_message", ""))
                for s in payload.get("model_version_status", [])]

    def metadata(self) -> dict[str, Any]:
        """GET /v1/models/<name>[/versions/<v>]/metadata.

        Returns:
          The server's JSON, as ServingClient.metadata describes it.
        """
        return self._request("GET", f"{self._model_url()}/metadata")

    def close(self) -> None:
        """Closes the HTTP session."""
        self._session.close()


def _require_outputs(outputs: dict[str, list]) -> None:
    missing = {PROBABILITIES, CLASS_INDEX, CLASS_NAME} - set(outputs)
    if missing:
        raise ServingError(f"the signature's outputs {sorted(outputs)} lack {sorted(missing)}: "
                           "is it the image classifier's serving signature?")


def _connection_problem(error: requests.ConnectionError) -> str:
    # requests wraps urllib3's MaxRetryError, whose reason ends with e.g. "Connection refused".
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return str(reason or error).rsplit(": ", 1)[-1]

