"""The versions of one model under a TF Serving model base path, kept current by polling.

Like TF Serving's file system source: every numeric sub-directory is a version; a new one is
loaded once it is complete (saved_model.pb present and no file changed since the previous
poll, since a copy in progress already has saved_model.pb); removed ones are unloaded. Version
labels and the version policy come from flags or a models.config file, re-read when it changes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import InvalidArgument, NotFound
from serving.servable import SAVED_MODEL_FILE, LoadError, Servable

LOG = logging.getLogger("serving.model_store")

AVAILABLE, LOADING, END = "AVAILABLE", "LOADING", "END"


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions to serve: the newest `latest` ones (0: all), or exactly `specific`."""

    latest: int = 0
    specific: frozenset[int] = frozenset()

    def select(self, versions: list[int]) -> list[int]:
        if self.specific:
            return [v for v in versions if v in self.specific]
        return sorted(versions)[-self.latest:] if self.latest else list(versions)


@dataclass(frozen=True)
class ModelConfig:
    """The part of a TF Serving ModelConfig the local server applies."""

    labels: dict[str, int] = field(default_factory=dict)
    policy: VersionPolicy = VersionPolicy()


def read_model_config(path: str, model_name: str) -> ModelConfig:
    """Labels and version policy of `model_name` in a models.config (ModelServerConfig text)."""
    with open(path) as f:
        try:
            config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
        except text_format.ParseError as e:
            raise ValueError(f"{path}: {e}") from None
    for model in config.model_config_list.config:
        if model.name == model_name:
            policy = model.model_version_policy
            which = policy.WhichOneof("policy_choice")
            if which == "specific":
                version_policy = VersionPolicy(specific=frozenset(policy.specific.versions))
            elif which == "latest":
                version_policy = VersionPolicy(latest=policy.latest.num_versions)
            elif which == "all":
                version_policy = VersionPolicy()
            else:  # TF Serving's default policy
                version_policy = VersionPolicy(latest=1)
            return ModelConfig(dict(model.version_labels), version_policy)
    raise ValueError(f"{path} has no config for model {model_name!r}")


@dataclass(frozen=True)
class VersionState:
    """A version the store knows: its state, and the error that ended it."""

    version: int
    state: str
    error: str = ""


def _snapshot(path: str) -> tuple | None:
    """The files of a version dir with sizes and mtimes, or None without saved_model.pb."""
    if not os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        return None
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            entries.append((os.path.relpath(os.path.join(root, name), path), st.st_size,
                            st.st_mtime_ns))
    return tuple(sorted(entries))


class ModelStore:
    """Loads, reloads and resolves the served versions of one model."""

    def __init__(self, base_path: str, model_name: str, labels: dict[str, int] | None = None,
                 config_file: str | None = None, poll_seconds: float = 1.0,
                 loader: Callable[[str, int], Servable] = Servable.load):
        self.base_path = base_path
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self._config_file = config_file
        self._config_mtime: int | None = None
        self._config = ModelConfig(dict(labels or {}))
        self._loader = loader
        self._lock = threading.Lock()
        self._servables: dict[int, Servable] = {}
        self._states: dict[int, VersionState] = {}
        self._seen: dict[int, tuple] = {}  # snapshot at the previous poll
        self._failed: dict[int, tuple] = {}  # snapshot that failed to load
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Loads what is there now, then polls in a background thread."""
        self.poll(first=True)
        self._thread = threading.Thread(target=self._poll_forever, name="model-store-poll",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # a bad poll (e.g. a config typo) must not stop serving
                LOG.exception("polling %s failed", self.base_path)

    def poll(self, first: bool = False) -> None:
        """One pass: re-read the config if it changed, load new versions, unload old ones."""
        self._reload_config(first)
        found = {int(d): os.path.join(self.base_path, d) for d in _listdir(self.base_path)
                 if d.isdigit()}
        policy = self._config.policy
        snapshots = {v: _snapshot(found[v]) for v in policy.select(sorted(found))}
        for version, snap in sorted(snapshots.items(), reverse=True):  # newest first
            stable = first or snap == self._seen.get(version)
            if (snap is None or version in self._servables or not stable
                    or self._failed.get(version) == snap):
                continue
            self._load(version, found[version], snap)
        self._seen = {v: s for v, s in snapshots.items() if s is not None}
        with self._lock:
            # The policy applies to what is loaded, so a version stays until its successor
            # is available (a push in progress or a broken one does not unload it).
            keep = set(policy.select(sorted(v for v in self._servables if v in found)))
            for version in [v for v in self._servables if v not in keep]:
                LOG.info("unloading version %d of %s", version, self.model_name)
                del self._servables[version]
                self._states[version] = VersionState(version, END)
            self._states = {v: s for v, s in self._states.items() if v in found}

    def _load(self, version: int, path: str, snapshot: tuple) -> None:
        with self._lock:
            self._states[version] = VersionState(version, LOADING)
        try:
            servable = self._loader(path, version)
        except Exception as e:  # tried again only once the version's files change
            LOG.error("%s", e if isinstance(e, LoadError) else f"loading {path} failed: {e!r}")
            self._failed[version] = snapshot
            with self._lock:
                self._states[version] = VersionState(version, END, str(e))
            return
        with self._lock:
            self._servables[version] = servable
            self._states[version] = VersionState(version, AVAILABLE)
        LOG.info("serving version %d of %s from %s", version, self.model_name, path)

    def _reload_config(self, first: bool) -> None:
        if not self._config_file:
            return
        mtime = os.stat(self._config_file).st_mtime_ns
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            self._config = read_model_config(self._config_file, self.model_name)
        except ValueError as e:
            if first:
                raise
            LOG.error("%s; keeping the previous model config", e)  # once per file change
            return
        LOG.info("model config %s: labels %s", self._config_file, self._config.labels)

    def resolve(self, model_name: str, version: int | None = None,
                label: str | None = None) -> Servable:
        """The servable a request names: latest, a version, or a version label."""
        self._check_name(model_name, f"Servable not found for request: Latest({model_name})")
        with self._lock:
            servables = dict(self._servables)
        if label:
            if label not in self._config.labels:
                raise NotFound(f"Unrecognized servable version label: {label}")
            version = self._config.labels[label]
        if version is None:
            if not servables:
                raise NotFound(f"Servable not found for request: Latest({model_name}) "
                               f"(no version loaded yet from {self.base_path})")
            return servables[max(servables)]
        if version not in servables:
            raise NotFound(f"Servable not found for request: Specific({model_name}, {version})")
        return servables[version]

    def states(self, model_name: str, version: int | None = None,
               label: str | None = None) -> list[VersionState]:
        """Every known version's state (or the one named), as GetModelStatus reports them."""
        self._check_name(model_name, f"Could not find any versions of model {model_name}")
        if label:
            if label not in self._config.labels:
                raise NotFound(f"Unrecognized servable version label: {label}")
            version = self._config.labels[label]
        with self._lock:
            states = sorted(self._states.values(), key=lambda s: s.version)
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                raise NotFound(f"Could not find version {version} of model {model_name}")
        if not states:
            raise NotFound(f"Could not find any versions of model {model_name}")
        return states

    def _check_name(self, model_name: str, not_found: str) -> None:
        if not model_name:
            raise InvalidArgument("Missing model name in request.")
        if model_name != self.model_name:
            raise NotFound(not_found)

    @property
    def versions(self) -> list[int]:
        """The versions ready to serve."""
        with self._lock:
            return sorted(self._servables)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
