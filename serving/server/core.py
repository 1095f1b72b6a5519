"""The local server's protocol-neutral core: one model's versions, and TF Serving's answers.

Every numeric directory under the base path is a version; the version policy (without a
config file, TF Serving's default: the newest only) picks the aspired ones, each loaded
through `serving.server.loader` once its files are complete. A failed load leaves the
version END with its error, retried only when its files change (TF Serving retries a few
times, a minute apart). Old versions go as TF Serving's AvailabilityPreservingPolicy lets
them. The gRPC and REST adapters map requests to the ModelSpecs and arrays taken here, and
the ServingErrors raised here to their statuses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

import grpc
import numpy as np
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from contract.artifacts import SAVED_MODEL_FILE, version_names
from contract.interface import SERVING_SIGNATURE
from serving.errors import InvalidArgument, NotFound, ServingError, Unimplemented
from serving.server.loader import SessionModel, load_like_tf_serving

LOG = logging.getLogger("serving.server")
State = get_model_status_pb2.ModelVersionStatus.State
SIGNATURE_DEF = "signature_def"  # the only GetModelMetadata field TF Serving offers
ModelConfig = model_server_config_pb2.ModelConfig


def read_model_config(path: str, model_name: str) -> ModelConfig:
    """The config of `model_name` in a models.config (ModelServerConfig, text format); its
    version policy and labels apply (not base_path).

    Args:
      path: the models.config file.
      model_name: the model whose entry is wanted.

    Returns:
      The model's ModelConfig.

    Raises:
      ValueError: the file does not parse, or has no entry for model_name.
    """
    with open(path) as f:
        try:
            config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
        except text_format.ParseError as e:
            raise ValueError(f"{path}: {e}") from None
    for model in config.model_config_list.config:
        if model.name == model_name:
            return model
    raise ValueError(f"{path} has no config for model {model_name!r}")


def aspired_versions(config: ModelConfig, versions: Iterable[int]) -> set[int]:
    """The versions on disk that the model's version policy serves (as TF Serving's file
    system source: no policy or `latest {}` means the newest one).

    Args:
      config: the model's config (its model_version_policy).
      versions: the version numbers on disk.

    Returns:
      All of them, the specific ones present, or the newest latest.num_versions (at least 1).
    """
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return set(versions)
    if which == "specific":
        return set(versions) & set(policy.specific.versions)
    return set(sorted(versions)[-max(policy.latest.num_versions, 1):])


class ModelStore:
    """The versions of one model, polled from its base path, and the requests they answer.

    Args:
      base_path: the directory of version directories.
      model_name: the name requests use.
      config_file: a models.config (policy and labels), re-read when it changes.
      poll_seconds: how often the base path and the config file are checked.
      loader: loads a version dir, returning the model and the warmup requests replayed.
    """

    def __init__(self, base_path: str, model_name: str, config_file: str | None = None,
                 poll_seconds: float = 1.0,
                 loader: Callable[[str], tuple[SessionModel, int]] = load_like_tf_serving):
        self.base_path, self.model_name, self.poll_seconds = base_path, model_name, poll_seconds
        self._config_file, self._loader = config_file, loader
        self._config_mtime = os.stat(config_file).st_mtime_ns if config_file else None
        self._config = (read_model_config(config_file, model_name) if config_file
                        else ModelConfig(name=model_name))
        self._lock = threading.Condition()
        self._models: dict[int, SessionModel] = {}
        self._handles: dict[int, int] = {}  # requests holding each version
        self._states: dict[int, get_model_status_pb2.ModelVersionStatus] = {}
        self._seen: dict[int, tuple | None] = {}  # the versions' files at the previous poll
        self._failed: dict[int, tuple] = {}  # the files of versions that failed to load
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- versions ------------------------------------------------------------------------

    def start(self) -> None:
        """Loads what is there now, then polls in a background thread."""
        self.poll(first=True)
        self._thread = threading.Thread(target=self._poll_forever, name="poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling and unloads every version."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        for version in list(self._models):
            self._unload(version)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # a bad poll (e.g. a config typo) must not stop serving
                LOG.exception("polling %s failed", self.base_path)

    def poll(self, first: bool = False) -> None:
        """Re-reads a changed config, loads new aspired versions, unloads old ones.

        Args:
          first: load complete versions at once; later a version loads once its files are
            unchanged since the previous poll (a copy in progress has saved_model.pb already).
        """
        mtime = os.stat(self._config_file).st_mtime_ns if self._config_file else None
        if mtime != self._config_mtime:
            self._config_mtime = mtime
            config = read_model_config(self._config_file, self.model_name)  # raises: keep old
            with self._lock:
                self._config = config
        found = _version_dirs(self.base_path)
        files = {version: _files(path) for version, path in found.items()}
        aspired = aspired_versions(self._config, found)
        for version in sorted(aspired - set(self._models), reverse=True):  # newest first
            if files[version] and (first or files[version] == self._seen.get(version)) and (
                    self._failed.get(version) != files[version]):
                self._load(version, found[version], files[version])
        self._seen = files
        # AvailabilityPreservingPolicy: the oldest unaspired version goes once an aspired one
        # is ready, or when none is aspired, or while several unaspired ones are loaded.
        while (unaspired := set(self._models) - aspired) and (
                not aspired or set(self._models) & aspired or len(unaspired) > 1):
            self._unload(min(unaspired))

    def _load(self, version: int, path: str, files: tuple) -> None:
        self._set_state(version, State.LOADING)
        try:
            model, replayed = self._loader(path)
        except Exception as e:  # LoadError, or whatever a broken version raises
            LOG.error("version %d of %s failed to load: %s", version, self.model_name, e)
            self._failed[version] = files
            return self._set_state(version, State.END,
                                   getattr(e, "code", grpc.StatusCode.UNKNOWN), str(e))
        with self._lock:
            self._models[version] = model
        self._set_state(version, State.AVAILABLE)
        LOG.info("serving version %d of %s from %s (%d warmup requests replayed)", version,
                 self.model_name, path, replayed)

    def _unload(self, version: int) -> None:
        with self._lock:
            model = self._models.pop(version)
        self._set_state(version, State.UNLOADING)
        with self._lock:
            self._lock.wait_for(lambda: not self._handles.get(version))
        model.close()
        self._set_state(version, State.END)
        LOG.info("unloaded version %d of %s", version, self.model_name)

    def _set_state(self, version: int, state: int, code: grpc.StatusCode = grpc.StatusCode.OK,
                   message: str = "") -> None:
        entry = get_model_status_pb2.ModelVersionStatus(version=version, state=state)
        entry.status.error_code, entry.status.error_message = code.value[0], message
        with self._lock:
            self._states[version] = entry

    @property
    def versions(self) -> list[int]:
        """The versions ready to serve.

        Returns:
          The version numbers, ascending.
        """
        with self._lock:
            return sorted(self._models)

    # --- requests ------------------------------------------------------------------------

    @contextlib.contextmanager
    def servable(self, spec: model_pb2.ModelSpec) -> Iterator[tuple[int, SessionModel]]:
        """Holds the version a ModelSpec names (number, label or latest): it is not unloaded
        before the block ends.

        Args:
          spec: the request's ModelSpec.

        Yields:
          The version number and its model.

        Raises:
          ServingError: INVALID_ARGUMENT without a name or for an unknown label, NOT_FOUND for
            a version (or model) not available; worded as TF Serving's ServerCore.
        """
        if not spec.name:
            raise InvalidArgument("ModelSpec has no name specified.")
        with self._lock:
            version = spec.version.value if spec.HasField("version") else None
            if spec.WhichOneof("version_choice") == "version_label":
                labels = self._config.version_labels if spec.name == self.model_name else {}
                if spec.version_label not in labels:
                    raise InvalidArgument(
                        f"Unrecognized servable version label: {spec.version_label}")
                version = labels[spec.version_label]
            models = self._models if spec.name == self.model_name else {}
            version = max(models, default=None) if version is None else version
            if version not in models:
                raise NotFound("Servable not found for request: " + (
                    f"Latest({spec.name})" if version is None else
                    f"Specific({spec.name}, {version})"))
            model = models[version]
            self._handles[version] = self._handles.get(version, 0) + 1
        try:
            yield version, model
        finally:
            with self._lock:
                self._handles[version] -= 1
                self._lock.notify_all()

    def predict(self, spec: model_pb2.ModelSpec,
                inputs: Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]],
                output_filter: Iterable[str] = ()
                ) -> tuple[model_pb2.ModelSpec, dict[str, np.ndarray]]:
        """Predict on the version spec names (see SessionModel.run for the arguments).

        Args:
          spec: the request's ModelSpec (name, version or label, signature name).
          inputs: a value per input alias (array or nested list; bytes for strings); or a
            function that makes them from the signature's TensorInfos by alias (REST reads
            its JSON by their dtypes), called with the version that then runs them, held
            from the one to the other.
          output_filter: the output aliases to fetch, each once; empty means all.

        Returns:
          The response's ModelSpec (name, version, signature name) and the outputs by alias.

        Raises:
          ServingError: as servable() and SessionModel.run; INVALID_ARGUMENT for an unknown
            signature. (An image whose header declares too many pixels, or that is none of
            the project's formats, is refused by the served graph itself, as in TF Serving:
            trainer/images.py.)
        """
        name = spec.signature_name or SERVING_SIGNATURE
        with self.servable(spec) as (version, model):
            if callable(inputs):
                if name not in model.signature_defs:
                    raise InvalidArgument(
                        f'Serving signature name: "{name}" not found in signature def')
                inputs = inputs(model.signature_defs[name].inputs)
            outputs = model.run(spec.signature_name, inputs, output_filter)
        answered = model_pb2.ModelSpec(name=spec.name, signature_name=name)
        answered.version.value = version
        return answered, outputs

    def reject_classify_or_regress(self, spec: model_pb2.ModelSpec, method: str) -> NoReturn:
        """Classify or Regress ("classify", "regress"): TF Serving's checks of the version
        and signature (without --enable_signature_method_name_check), then UNIMPLEMENTED:
        the local server runs Predict only. This project's signatures fail the checks.

        Args:
          spec: the request's ModelSpec; an empty signature_name means serving_default.
          method: "classify" or "regress".

        Returns:
          Never: every call raises.

        Raises:
          InvalidArgument: no such signature, not one input, or not one (regress) or one or
            two (classify) outputs.
          Unimplemented: the signature passes the checks.
          ServingError: as servable().
        """
        name = spec.signature_name or SERVING_SIGNATURE
        with self.servable(spec) as (_, model):
            signature = model.signature_defs.get(name)
        if signature is None:
            raise InvalidArgument(f"No signature was found with the name: {name}")
        outputs = len(signature.outputs)
        if len(signature.inputs) != 1:
            raise InvalidArgument("Expected one input Tensor.")
        if method == "classify" and outputs not in (1, 2):
            raise InvalidArgument(f"Expected one or two output Tensors, found {outputs}")
        if method == "regress" and outputs != 1:
            raise InvalidArgument("Expected one output Tensor.")
        raise Unimplemented(f"the local server does not run {method} signatures")

    def model_status(self, request: get_model_status_pb2.GetModelStatusRequest
                     ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: the version asked for, or every version newest first; a version
        label is ignored, as TF Serving ignores it.

        Args:
          request: the GetModelStatusRequest.

        Returns:
          The response, one ModelVersionStatus (state and error) per version.

        Raises:
          InvalidArgument: the request has no model_spec.
          NotFound: the version asked for has no state, or the model has none (e.g. an
            unknown model name).
        """
        if not request.HasField("model_spec"):
            raise InvalidArgument("Missing ModelSpec")
        spec = request.model_spec
        with self._lock:
            states = dict(self._states) if spec.name == self.model_name else {}
        if spec.HasField("version"):
            if spec.version.value not in states:
                raise NotFound(f"Could not find version {spec.version.value} of model "
                               f"{spec.name}")
            states = {spec.version.value: states[spec.version.value]}
        if not states:
            raise NotFound(f"Could not find any versions of model {spec.name}")
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=[states[v] for v in sorted(states, reverse=True)])

    def model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                       ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """GetModelMetadata: every SignatureDef of the version the request names.

        Args:
          request: the GetModelMetadataRequest; metadata_field must be ["signature_def"].

        Returns:
          The response: model_spec (name, version) and metadata["signature_def"], a packed
          SignatureDefMap (__saved_model_init_op included).

        Raises:
          InvalidArgument: no model_spec, no metadata_field, or a field other than
            signature_def.
          ServingError: as servable().
        """
        if not request.HasField("model_spec"):
            raise InvalidArgument("Missing ModelSpec")
        if not request.metadata_field:
            raise InvalidArgument(
                "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF:
                raise InvalidArgument(f"Metadata field {field} is not supported")
        with self.servable(request.model_spec) as (version, model):
            signatures = get_model_metadata_pb2.SignatureDefMap(
                signature_def=model.all_signature_defs)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.metadata[SIGNATURE_DEF].Pack(signatures)
        return response


def as_serving_error(error: Exception) -> ServingError:
    """The error a request answers with: a ServingError as it is, anything else (a bug) is
    logged and INTERNAL. It comes detached from its traceback and the exceptions before it:
    they hold the request's frames (its body, its arrays), which the adapters' `error` would
    otherwise keep alive until the cyclic GC runs, dozens of requests later.

    Args:
      error: what the request raised.

    Returns:
      error itself if it is a ServingError, else an INTERNAL ServingError naming it.
    """
    if not isinstance(error, ServingError):
        LOG.error("request failed", exc_info=error)
        error = ServingError(f"internal error: {error!r}", grpc.StatusCode.INTERNAL)
    error.__traceback__ = error.__context__ = error.__cause__ = None
    return error


def _version_dirs(base_path: str) -> dict[int, str]:
    children = os.listdir(base_path) if os.path.isdir(base_path) else []
    return {int(name): os.path.join(base_path, name) for name in version_names(children)
            if os.path.isdir(os.path.join(base_path, name))}


def _files(path: str) -> tuple | None:
    """A version dir's files with sizes and mtimes; None while saved_model.pb is missing."""
    if not os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        return None
    entries = []
    for root, _, names in os.walk(path):
        for name in names:
            stat = os.stat(os.path.join(root, name))
            entries.append((os.path.relpath(os.path.join(root, name), path), stat.st_size,
                            stat.st_mtime_ns))
    return tuple(sorted(entries))
