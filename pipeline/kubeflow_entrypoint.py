"""The container entry point of every step on Kubeflow: TFX's Kubeflow V2 entry point, with the
artifacts read and written at the paths where the KFP launcher stages them.

The Kubeflow Pipelines v2 launcher downloads each input artifact from the pipeline root's object
store to a local path before the step runs, and uploads each output artifact's local path after
it: `gs://B/x` is `/gcs/B/x`, `s3://B/x` is `/s3/B/x`, `minio://B/x` is `/minio/B/x`. It still
hands the step the remote URIs. kfp's own Python components map them to those local paths; TFX's
entry point does not, and TensorFlow 2.21 has no file system for `s3://` or `minio://`. So this
entry point rewrites the artifact URIs of the executor input to the launcher's local paths,
creates the output folders, runs TFX's entry point unchanged, and writes the remote URIs back
into the executor output (and into metadata values that name a rewritten path), which is what
the launcher records.

`s3://` and `minio://` URIs are always rewritten. `gs://` ones only where `/gcs` exists (the
launcher staged them, or a Cloud Storage FUSE mount provides them); elsewhere TensorFlow reads
and writes `gs://` itself.

Locations that are not artifacts but parameters (ExampleGen's input_base, the base weights, the
serving dir the Pusher writes) are the step's own to reach. Where they are `s3://` or `minio://`,
this entry point plays the launcher's part for them too (pipeline/object_store.py): it copies each
one, whole, to a local folder under STAGING_ROOT before the step, gives the step that folder, and
after a successful step copies back the files the step added or changed (a new model version,
its saved_model.pb last).

The KFP driver also adds an output of its own to every step, `executor-logs` (a system.Artifact
that the launcher fills with the step's log). TFX's entry point cannot make a TFX artifact of that
type, so this entry point takes it out of what TFX is given; the launcher still writes and
uploads it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import contract.keras_env  # noqa: F401  (before TensorFlow, as every entry point)
from pipeline import object_store

# The launcher's local path for each object-store scheme (launcher_v2.go, LocalPathForURI).
LAUNCHER_PATHS = {"gs": "/gcs/", "s3": "/s3/", "minio": "/minio/"}
INVOCATION_FLAG = "--json_serialized_invocation_args"
# Outputs the KFP driver adds for its launcher (driver.go, publish_logs), not the component's.
LAUNCHER_OUTPUTS = {"executor-logs": "system.Artifact"}
TFX_ENTRY_POINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def launcher_path(uri: str, gcs_staged: bool, root: str = "/") -> str | None:
    """The local path where the launcher stages uri, or None to leave the uri as it is.

    Args:
      uri: an artifact's URI.
      gcs_staged: whether gs:// artifacts are staged under /gcs here.
      root: the file system root the launcher's paths are under ("/" in a step's container).

    Returns:
      The local path, or None for a local path, an unknown scheme, or gs:// when not staged.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in LAUNCHER_PATHS or (scheme == "gs" and not gcs_staged):
        return None
    return os.path.join(root, LAUNCHER_PATHS[scheme].lstrip("/") + rest.split("?", 1)[0])


def _artifacts(section: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every RuntimeArtifact (as JSON) of an executor input's inputs or outputs."""
    for artifact_list in section.get("artifacts", {}).values():
        yield from artifact_list.get("artifacts", [])


def localize(executor_input: dict[str, Any], gcs_staged: bool, root: str = "/"
             ) -> dict[str, str]:
    """Rewrites the executor input's artifact URIs to the launcher's local paths, in place, and
    creates the output artifacts' parent folders (as the launcher does); drops the launcher's
    own outputs.

    Args:
      executor_input: the ExecutorInput as JSON (`--json_serialized_invocation_args`).
      gcs_staged: whether gs:// artifacts are staged under /gcs here.
      root: the file system root the launcher's paths are under.

    Returns:
      local path -> the remote URI it stands for, for each rewritten artifact.
    """
    outputs = executor_input.get("outputs", {}).get("artifacts", {})
    for name, schema_title in LAUNCHER_OUTPUTS.items():
        listed = outputs.get(name, {}).get("artifacts", [])
        if listed and all(a.get("type", {}).get("schemaTitle") == schema_title for a in listed):
            del outputs[name]
    remote_of = {}
    for section in ("inputs", "outputs"):
        for artifact in _artifacts(executor_input.get(section, {})):
            local = launcher_path(artifact.get("uri", ""), gcs_staged, root)
            if local is None:
                continue
            remote_of[local] = artifact["uri"]
            artifact["uri"] = local
            if section == "outputs":
                os.makedirs(os.path.dirname(local), exist_ok=True)
    return remote_of


# An s3:// or minio:// location inside a parameter's text (a JSON string value included).
PARAMETER_LOCATION = re.compile(r"\b(?:" + "|".join(object_store.SCHEMES) + r")://"
                                r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[^\s\"'\\,;]*)?")
STAGING_ROOT = "/tmp/kfp-staged"


@dataclass(frozen=True)
class StagedLocation:
    """A parameter's object-store location, copied to a local file or folder."""

    remote: str
    local: Path
    before: dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns) after the copy


def _files(local: Path) -> dict[str, tuple[int, int]]:
    """Each file under local (or local itself, as ""), with its size and mtime."""
    if local.is_file():
        stat = local.stat()
        return {"": (stat.st_size, stat.st_mtime_ns)}
    return {p.relative_to(local).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in local.rglob("*") if p.is_file()}


def stage_parameter_locations(executor_input: dict[str, Any], staging_root: str = STAGING_ROOT
                              ) -> list[StagedLocation]:
    """Copies the object-store locations the parameters name to local paths and rewrites the
    parameters to them, in place.

    Args:
      executor_input: the ExecutorInput as JSON.
      staging_root: the local folder the copies go under (<root>/<scheme>/<bucket>/<key>).

    Returns:
      The staged locations (a location inside another is staged with it).

    Raises:
      object_store.ObjectStoreError: a location cannot be reached.
    """
    parameters = executor_input.get("inputs", {}).get("parameterValues", {})
    found = {m.group(0).rstrip("/") for value in parameters.values() if isinstance(value, str)
             for m in PARAMETER_LOCATION.finditer(value)}
    outer = sorted(u for u in found if not any(u.startswith(o + "/") for o in found))
    staged = []
    for uri in outer:
        # The launcher's layout (<scheme>/<bucket>/<key>), under staging_root.
        local = Path(launcher_path(uri, gcs_staged=False, root=staging_root))
        local.parent.mkdir(parents=True, exist_ok=True)
        object_store.download(object_store.client(uri), uri, local)
        staged.append(StagedLocation(uri, local, _files(local)))
    for name, value in parameters.items():
        if isinstance(value, str):
            for location in staged:
                value = re.sub(re.escape(location.remote) + r"(?=[/\s\"'\\,;?]|$)",
                               lambda _, loc=location: str(loc.local), value)
            parameters[name] = value
    return staged


def upload_changes(staged: list[StagedLocation]) -> int:
    """Copies back the files a step added or changed in its staged locations.

    Args:
      staged: stage_parameter_locations' result.

    Returns:
      The number of files copied.
    """
    copied = 0
    for location in staged:
        changed = [location.local / rel for rel, stat in _files(location.local).items()
                   if location.before.get(rel) != stat]
        if changed:
            copied += object_store.upload(object_store.client(location.remote), location.local,
                                          location.remote, only=changed)
    return copied


def _remote(value: Any, remote_of: dict[str, str]) -> Any:
    """value with any rewritten local path (or a path below one) given back as its remote URI."""
    if isinstance(value, str):
        for local, remote in remote_of.items():
            if value == local or value.startswith(local + "/"):
                return remote + value[len(local):]
        return value
    if isinstance(value, dict):
        return {k: _remote(v, remote_of) for k, v in value.items()}
    if isinstance(value, list):
        return [_remote(v, remote_of) for v in value]
    return value


def restore_remote_uris(executor_output: dict[str, Any], remote_of: dict[str, str]) -> dict:
    """The executor output (JSON) with the remote URIs back in its artifacts' uri and metadata.

    Args:
      executor_output: what TFX's entry point wrote.
      remote_of: localize()'s mapping.

    Returns:
      A new executor output.
    """
    restored = json.loads(json.dumps(executor_output))
    for artifact_list in restored.get("artifacts", {}).values():
        for artifact in artifact_list.get("artifacts", []):
            for key in ("uri", "metadata"):
                if key in artifact:
                    artifact[key] = _remote(artifact[key], remote_of)
    return restored


def main(argv: list[str] | None = None) -> None:
    """Runs TFX's Kubeflow V2 entry point with the artifacts at the launcher's local paths.

    Args:
      argv: TFX's entry point arguments (default sys.argv[1:]).
    """
    from tfx.dsl.io import fileio
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

    argv = list(sys.argv[1:] if argv is None else argv)
    at = argv.index(INVOCATION_FLAG) + 1
    executor_input = json.loads(argv[at])
    remote_of = localize(executor_input, gcs_staged=os.path.isdir(LAUNCHER_PATHS["gs"]))
    try:
        staged = stage_parameter_locations(executor_input)
    except object_store.ObjectStoreError as e:
        sys.exit(f"error: {e}")
    remote_of.update({str(location.local): location.remote for location in staged})
    argv[at] = json.dumps(executor_input)
    # As TFX's own `python -m` start does (absl's app.run with its flags parser), minus the
    # exit at the end.
    kubeflow_v2_run_executor.main(kubeflow_v2_run_executor._parse_flags([TFX_ENTRY_POINT, *argv]))
    try:
        upload_changes(staged)
    except object_store.ObjectStoreError as e:
        sys.exit(f"error: {e}")
    if remote_of:
        output_file = executor_input["outputs"]["outputFile"]
        with fileio.open(output_file) as f:
            executor_output = json.load(f)
        with fileio.open(output_file, "w") as f:
            f.write(json.dumps(restore_remote_uris(executor_output, remote_of)))


if __name__ == "__main__":
    main()
