"""The Kubeflow Pipelines v2 launcher's object-store cycle, played around kfp.local's steps.

On a cluster every step's pod runs KFP's launcher, which moves the artifacts between the pipeline
root's object store and the pod's file system; the step itself sees only local paths, and
anything it writes outside its output artifacts is gone with the pod. kfp.local has no
launcher: it runs the container on a bind-mounted local pipeline root. `launcher_handler` puts
the launcher's cycle back, step by step as the launcher does it. The citations are to
kubeflow/pipelines at LAUNCHER_COMMIT: L is backend/src/v2/component/launcher_v2.go, D is
backend/src/v2/driver/driver.go.

1. The driver gives each output artifact a remote URI under the step's task root, adds an
   `executor-logs` output of type system.Artifact (D:747-759; publish_logs defaults to true,
   backend/src/v2/compiler/argocompiler/container.go:142-150), and points the executor output
   file at the launcher's local path of the task root (D:791-799). The executor input keeps the
   remote URIs (L:1051-1075: `{{$}}` is the executor input as it is); the step maps them itself.
   The pod gets its container's env and the secrets the Kubernetes platform spec maps to env
   vars (pod_environment; the driver's kubernetes_executor_config, which kfp.local ignores).
2. The launcher downloads every input artifact, a whole prefix, to its local path before the
   command starts (L:691, L:927-1004, LocalPathForURI L:1239-1253).
3. It creates the parent folder of each output artifact's local path, and nothing else
   (L:278, L:695, L:1280-1308): not the artifact's own folder.
4. It runs the command, with its output copied into the executor-logs file (L:697-719,
   L:632-654). A non-zero exit fails the step, and only the executor-logs artifact is uploaded
   (L:445-454, L:787-790). A missing executor output file is read as an empty one
   (L:1208-1220); here it fails the step, which is stricter.
5. It uploads each output artifact's local path (recursively) to its remote URI, after merging
   in the URI the executor output gives for it (L:792-833, L:1188-1206). Only the executor
   input's output artifacts are uploaded; a missing local path is only a warning (L:820-829).
   Nothing else leaves the pod: here, the step's file system (a fresh folder per step, mounted
   at the launcher's paths) is deleted after the upload.

The executor output the step wrote is what the launcher records (ML Metadata on a cluster);
here it is stored in the object store beside the step's outputs, where kfp.local's orchestrator
reads it back. The task roots are kfp.local's (`<root>/<pipeline>-<time>/<task>`), without the
driver's per-execution salt level.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipeline import object_store

LAUNCHER_COMMIT = "7b70c7b95f6832772efd6fd0029a4024491a0f44"  # master, 2026-08-21
# L:1239-1253, LocalPathForURI: the local path of each object-store scheme.
LOCAL_PATHS = {"gs": "/gcs/", "s3": "/s3/", "minio": "/minio/"}
# D:791-799: the executor output file, in the task root's local path.
OUTPUT_METADATA_NAME = "output_metadata.json"
# D:747-759: the launcher's own output, the step's log.
EXECUTOR_LOGS = "executor-logs"
INVOCATION_FLAG = "--json_serialized_invocation_args"
CLASS_FLAG = "--executor_class_path"


class ObjectStore:
    """An S3 protocol endpoint (moto's server on loopback here, MinIO on a cluster), with the
    launcher's whole-prefix downloads and recursive uploads (pipeline/object_store.py's, which
    the steps' entry point also uses for the locations it stages itself)."""

    def __init__(self, endpoint: str, scheme: str = "minio") -> None:
        """Connects to endpoint (http://127.0.0.1:PORT) for URIs of scheme (minio or s3)."""
        import boto3

        self.scheme, self.endpoint = scheme, endpoint
        self.credentials = {"AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "minio123"}
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                   aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
                                   aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"])

    def split(self, uri: str) -> tuple[str, str]:
        """(bucket, key) of scheme://bucket/key."""
        return object_store.split(uri)

    def keys(self, uri: str) -> list[str]:
        """Every key at or under uri."""
        return object_store.keys(self.client, uri)

    def download(self, uri: str, local: Path) -> int:
        """Downloads the object or prefix at uri to local; returns the number of files."""
        return object_store.download(self.client, uri, local)

    def upload(self, local: Path, uri: str) -> int:
        """Uploads a file, or a folder recursively, to uri; returns the number of files."""
        return object_store.upload(self.client, local, uri)

    def read_json(self, uri: str) -> dict[str, Any]:
        """The JSON object at uri."""
        bucket, key = self.split(uri)
        return json.loads(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def write_json(self, value: dict[str, Any], uri: str) -> None:
        """Writes value as JSON at uri."""
        bucket, key = self.split(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=json.dumps(value).encode())


def pod_environment(spec: Path, secrets: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The environment the backend gives each step's container, from the compiled YAML: the
    container's env, and the secrets its Kubernetes platform spec maps to env vars (which the
    KFP driver applies to the pod; kfp.local ignores both).

    Args:
      spec: the compiled PipelineSpec YAML (and its PlatformSpec document, if any).
      secrets: secret name -> key -> value (what the cluster would hold).

    Returns:
      executor class path (the step's `--executor_class_path`) -> env.
    """
    import yaml

    pipeline, *rest = yaml.safe_load_all(spec.read_text())
    kubernetes = (rest[0] if rest else {}).get("platforms", {}).get("kubernetes", {})
    configs = kubernetes.get("deploymentSpec", {}).get("executors", {})
    by_class = {}
    for name, executor in pipeline["deploymentSpec"]["executors"].items():
        container = executor.get("container", {})
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        for secret in configs.get(name, {}).get("secretAsEnv", []):
            for key in secret["keyToEnv"]:
                env[key["envVar"]] = secrets[secret["secretName"]][key["secretKey"]]
        args = container.get("args", [])
        by_class[args[args.index(CLASS_FLAG) + 1]] = env
    return by_class


def local_path(uri: str) -> str:
    """The launcher's local path for uri (LocalPathForURI), refusing other schemes as it does."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in LOCAL_PATHS:
        raise ValueError(f"failed to generate local path for URI {uri}: unsupported scheme")
    return LOCAL_PATHS[scheme] + rest.split("?", 1)[0]


def _artifacts(executor_input: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return [a for artifact_list in executor_input[section].get("artifacts", {}).values()
            for a in artifact_list.get("artifacts", [])]


class _Tee:
    """A text stream writing to two others (the launcher copies the step's output to its log)."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def _chown_tree(path: Path, user: str) -> None:
    """The step's user owns what the launcher prepared (both run as the pod's user)."""
    uid, gid = (int(x) for x in user.split(":"))
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, uid, gid)


def launcher_handler(store: ObjectStore, scratch: Path,
                     environment: dict[str, dict[str, str]] | None = None) -> type:
    """A kfp.local DockerTaskHandler that runs each step inside the launcher's cycle.

    Args:
      store: the pipeline root's object store.
      scratch: where each step's pod file system is made (and deleted after the step).
      environment: each step's env by executor class path (pod_environment).

    Returns:
      The handler class, to put in place of kfp.local.docker_task_handler.DockerTaskHandler.
    """
    from kfp.local import docker_task_handler, status

    class LauncherTaskHandler(docker_task_handler.DockerTaskHandler):
        """A step in its container, between the launcher's download and upload."""

        def run(self) -> status.Status:
            import docker

            at = self.full_command.index(INVOCATION_FLAG) + 1
            executor_input = json.loads(self.full_command[at])
            outputs = executor_input["outputs"]
            remote_output_file = outputs["outputFile"]
            task_root = remote_output_file.rsplit("/", 1)[0]
            # Step 1: what the driver adds to kfp.local's executor input.
            outputs.setdefault("artifacts", {})[EXECUTOR_LOGS] = {"artifacts": [{
                "name": EXECUTOR_LOGS, "type": {"schemaTitle": "system.Artifact"},
                "uri": f"{task_root}/{EXECUTOR_LOGS}"}]}
            outputs["outputFile"] = f"{local_path(task_root)}/{OUTPUT_METADATA_NAME}"
            pod = Path(tempfile.mkdtemp(prefix="pod-", dir=scratch))
            in_pod = lambda uri: pod / local_path(uri).lstrip("/")  # noqa: E731
            try:
                for artifact in _artifacts(executor_input, "inputs"):  # step 2
                    store.download(artifact["uri"], in_pod(artifact["uri"]))
                for artifact in _artifacts(executor_input, "outputs"):  # step 3
                    in_pod(artifact["uri"]).parent.mkdir(parents=True, exist_ok=True)
                _chown_tree(pod, self.runner.container_run_args.get("user", "0:0"))
                command = list(self.full_command)
                command[at] = json.dumps(executor_input)
                mounts = [docker.types.Mount(target=f"/{top.name}", source=str(top), type="bind")
                          for top in pod.iterdir()]
                run_args = dict(self.runner.container_run_args)
                run_args["mounts"] = [*run_args.get("mounts", []), *mounts]
                if CLASS_FLAG in command and environment:
                    step_env = environment[command[command.index(CLASS_FLAG) + 1]]
                    run_args["environment"] = {**run_args.get("environment", {}), **step_env}
                client = docker.from_env()
                logs = in_pod(f"{task_root}/{EXECUTOR_LOGS}")
                try:  # step 4
                    with open(logs, "w") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)):
                        code = docker_task_handler.run_docker_container(
                            client=client, image=self.image, command=command, volumes={},
                            **run_args)
                finally:
                    client.close()
                metadata = pod / outputs["outputFile"].lstrip("/")
                if code != 0 or not metadata.is_file():
                    store.upload(logs, f"{task_root}/{EXECUTOR_LOGS}")
                    return status.Status.FAILURE
                for artifact in _artifacts(executor_input, "outputs"):  # step 5
                    if in_pod(artifact["uri"]).exists():
                        store.upload(in_pod(artifact["uri"]), artifact["uri"])
                store.write_json(json.loads(metadata.read_text()), remote_output_file)
                return status.Status.SUCCESS
            finally:
                shutil.rmtree(pod, ignore_errors=True)

    return LauncherTaskHandler


def read_outputs_from(store: ObjectStore) -> None:
    """Makes kfp.local's orchestrator read a step's executor output from the object store
    (where the harness recorded it) when its path is a URI."""
    from google.protobuf import json_format
    from kfp.local import executor_output_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    load = executor_output_utils.load_executor_output

    def load_executor_output(executor_output_path: str):
        if "://" not in executor_output_path:
            return load(executor_output_path=executor_output_path)
        return json_format.ParseDict(store.read_json(executor_output_path),
                                     pipeline_spec_pb2.ExecutorOutput(),
                                     ignore_unknown_fields=True)

    executor_output_utils.load_executor_output = load_executor_output


def probe_lost_files(store: ObjectStore, image: str, user: str, scratch: Path, root: str) -> str:
    """Runs one step in the launcher's cycle that writes a file into its output artifact, one
    beside it under the launcher's paths, and one in /tmp; only the first may reach the store.

    Args:
      store: the object store.
      image: any image with a POSIX shell.
      user: the step's uid:gid.
      scratch: where the step's pod file system is made.
      root: a URI under which the probe's output goes.

    Returns:
      A line saying what reached the store.

    Raises:
      AssertionError: the step failed, or a file outside the output artifact was uploaded.
    """
    from kfp import local
    from kfp.local import status

    out, beside = f"{root}/step/out", f"{root}/step/beside.txt"
    executor_input = {"inputs": {}, "outputs": {
        "artifacts": {"out": {"artifacts": [{"name": "out", "uri": out}]}},
        "outputFile": f"{root}/step/executor_output.json"}}
    metadata = f"{local_path(root)}/step/{OUTPUT_METADATA_NAME}"
    script = (f"echo kept > {local_path(out)}/kept.txt && echo lost > {local_path(beside)} && "
              f"echo lost > /tmp/lost.txt && echo '{{}}' > {metadata}")
    # The command reads its executor input as the spec's steps do, from the invocation flag.
    command = ["sh", "-c", f"mkdir -p {local_path(out)} && {script}", "probe",
               INVOCATION_FLAG, json.dumps(executor_input)]
    handler = launcher_handler(store, scratch)(
        image=image, full_command=command, pipeline_root="/unused",
        runner=local.DockerRunner(user=user))
    assert handler.run() == status.Status.SUCCESS, "the probe step failed"
    uploaded = store.keys(f"{root}/")
    assert store.split(f"{out}/kept.txt")[1] in uploaded, uploaded
    lost = [k for k in uploaded if k.endswith(("beside.txt", "lost.txt"))]
    assert not lost, f"uploaded from outside the output artifact: {lost}"
    return f"in the store: {', '.join(sorted(uploaded))}; beside.txt and /tmp/lost.txt lost"
