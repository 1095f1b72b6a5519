"""The TFX Pusher, made idempotent and atomic.

Idempotent: a model the serving dir already holds is not pushed again. A rerun of an unchanged
pipeline re-evaluates the cached model against itself (the version it pushed is now the served
baseline) and blesses it again; the stock Pusher would then copy it into a new version
directory, so TF Serving would reload an identical model under a new number.

Atomic: on a local (or mounted) file system a version is copied under a hidden staging name
and renamed into place, so a server never sees a half-written version, and a push killed
midway leaves only a hidden `.incoming-*` folder, which no server loads (TF Serving and the
local server take numeric folder names only) and a later push removes (at once when the
killed push ran on the same host, else after STALE_STAGING_SECONDS). Object stores have no
atomic rename; there the stock order applies (saved_model.pb copied last).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import time
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from components.served_baseline import version_names
from contract.artifacts import SAVED_MODEL_FILE


def saved_model_digest(model_dir: str) -> str:
    """SHA-256 over a SavedModel's files (graph, variables, assets), by relative path.

    Args:
      model_dir: the SavedModel directory (local or a tf.io.gfile URI).

    Returns:
      The digest, 64 hex digits.
    """
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in tf.io.gfile.walk(model_dir):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, model_dir).encode() + b"\0")
            with tf.io.gfile.GFile(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def find_served_copy(model_dir: str, base_directory: str) -> str | None:
    """The version directory under base_directory holding the same model, if any.

    Args:
      model_dir: the SavedModel to push.
      base_directory: the Pusher's destination (numeric version directories).

    Returns:
      The newest version directory with the same saved_model_digest, or None.
    """
    versions = version_names(base_directory)
    if not versions:
        return None
    digest = saved_model_digest(model_dir)
    for version in versions:
        candidate = os.path.join(base_directory, version)
        if saved_model_digest(candidate) == digest:
            return candidate
    return None


STAGING_PREFIX = ".incoming-"
STALE_STAGING_SECONDS = 3600  # a staging folder this old belongs to a push that was killed


def publish_version(model_dir: str, base_directory: str, version: str) -> str:
    """Copies a SavedModel to base_directory/version so that the version appears whole.

    Args:
      model_dir: the SavedModel to publish.
      base_directory: TF Serving's model base path.
      version: the version folder's name (digits).

    Returns:
      The version's path.
    """
    target = os.path.join(base_directory, version)
    if "://" in base_directory:  # no atomic rename: saved_model.pb last, as the stock Pusher
        io_utils.copy_dir(model_dir, target, deny_regex_patterns=[r"saved_model\.pb"])
        io_utils.copy_file(os.path.join(model_dir, SAVED_MODEL_FILE),
                           os.path.join(target, SAVED_MODEL_FILE))
        return target
    os.makedirs(base_directory, exist_ok=True)
    _remove_stale_staging(base_directory)
    staging = os.path.join(base_directory, staging_name(version))
    shutil.rmtree(staging, ignore_errors=True)
    io_utils.copy_dir(model_dir, staging)
    os.rename(staging, target)  # atomic within one file system
    return target


def staging_name(version: str) -> str:
    """The hidden folder a version is copied into before the rename: it names the host and
    the process, so that a later push on the same host can tell a killed push's leftovers.

    Args:
      version: the version being pushed.

    Returns:
      ".incoming-<version>-<host>-<pid>".
    """
    return f"{STAGING_PREFIX}{version}-{socket.gethostname()}-{os.getpid()}"


def _left_by_a_dead_push(name: str) -> bool:
    """Whether a staging folder's push ran on this host in a process that is gone."""
    host, _, pid = name[len(STAGING_PREFIX):].partition("-")[2].rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's live process
        return False
    return False


def _remove_stale_staging(base_directory: str) -> None:
    now = time.time()
    for name in os.listdir(base_directory):
        if not name.startswith(STAGING_PREFIX):
            continue
        path = os.path.join(base_directory, name)
        try:
            stale = now - os.path.getmtime(path) > STALE_STAGING_SECONDS
        except OSError:  # removed meanwhile
            continue
        if stale or _left_by_a_dead_push(name):
            logging.info("Removing %s, left by a push that did not finish.", path)
            shutil.rmtree(path, ignore_errors=True)


class IdempotentPusherExecutor(pusher_executor.Executor):
    """Pushes blessed models like the stock executor, skipping models already served."""

    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        """Pushes like the stock executor, or records an identical served version as pushed."""
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") == "filesystem" and self.CheckBlessing(
                input_dict):
            model_path = self.GetModelPath(input_dict)
            served = find_served_copy(model_path, destination.filesystem.base_directory)
            if served:
                logging.info("Model already served at %s; not pushing a new version.", served)
                model_push = artifact_utils.get_single_instance(
                    output_dict[standard_component_specs.PUSHED_MODEL_KEY])
                io_utils.copy_dir(model_path, model_push.uri)
                self._MarkPushed(model_push, pushed_destination=served,
                                 pushed_version=os.path.basename(served))
                return
            if destination.filesystem.versioning in (
                    pusher_pb2.Versioning.AUTO, pusher_pb2.Versioning.UNIX_TIMESTAMP):
                self._push_atomically(model_path, destination.filesystem.base_directory,
                                      output_dict)
                return
        super().Do(input_dict, output_dict, exec_properties)

    def _push_atomically(self, model_path: str, base_directory: str,
                         output_dict: dict[str, list[types.Artifact]]) -> None:
        """The stock filesystem push (unix-time version, archive copy, marks), atomically."""
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        version = str(int(time.time()))
        target = os.path.join(base_directory, version)
        if tf.io.gfile.exists(target):
            logging.info("Destination directory %s already exists, skipping the copy.", target)
        else:
            publish_version(model_path, base_directory, version)
            logging.info("Model written to serving path %s.", target)
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=target, pushed_version=version)
