"""The compiled Kubeflow pipeline, executed by kfp's own local runner in the project's image.

    scripts/kubeflow-test [IMAGE]      (make kubeflow-test; it starts the engine's Docker API)

Compiles the pipeline for the mini set with `tfx-image-transfer-kubeflow`, exactly as a user
does, and runs the YAML with `kfp.local.DockerRunner`: every task is the spec's own container
(the image, TFX's Kubeflow V2 entry point, the executor input the backend would send), run as
uid 1000, one after the other in the DAG's order. Then it checks what a cluster run would have
to show: every task's executor_output.json, the Evaluator's blessing, the serving check's
InfraBlessing, the pushed version, and that version loaded as TF Serving loads it, answering
on photos. It prints one line per check and `N passed, N failed`.

What kfp.local drops, and this harness puts back (nothing else is patched):
- Artifact types. kfp.local hands a task's outputs downstream as dsl.Artifact objects, which
  keep only a schema title; TFX declares its types as instance schemas, so every input would
  arrive as a plain `system.Artifact` and TFX's entry point could not find its class. The
  backend keeps the producer's type (ML Metadata holds it); here the producer's declared
  ArtifactTypeSchema is carried along with each artifact.
- Task success. kfp.local removes each container itself and counts a container that is gone
  before `wait()` as a success; a TFX executor writes executor_output.json only when it
  finishes, so the harness reads every task's file itself.

On a minio:// root (moto's S3 server on loopback), the launcher's cycle around each step, the
container env and the platform spec's secrets are played by tests/kfp_launcher.py.

What only a cluster covers: Argo and the real KFP driver and launcher, the KFP API server,
caching, retries, Kubernetes (pods, runAsNonRoot, resources), GCS and a real MinIO.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import contract.keras_env  # noqa: F401  (before TensorFlow, as every entry point)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = "localhost/tfx-image-transfer:local"
# Podman's Docker API lists local builds as localhost/NAME:TAG; kfp.local pulls any image whose
# exact name it does not find, so the spec must name it that way.
USER = "1000:1000"
# One epoch per phase at 96 px on the mini set, still expected to bless (>= 0.7): the same
# recipe `make image-test` runs.
FAST_FLAGS = ["--alpha", "0.35", "--image-size", "96", "--epochs", "1", "--fine-tune-epochs", "1",
              "--batch-size", "8", "--learning-rate", "1e-2", "--fine-tune-lr-factor", "1e-3",
              "--validation-test-fraction", "0.5", "--min-accuracy", "0.7"]
SMALL_WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
# Open-source Kubeflow's default: its MinIO, bucket mlpipeline.
MINIO_BUCKET = "mlpipeline"
MINIO_ROOT = f"minio://{MINIO_BUCKET}/v2/artifacts"


def keep_artifact_types() -> None:
    """Makes kfp.local pass each artifact downstream with its producer's declared type.

    kfp.local turns a task's output RuntimeArtifacts into dsl.Artifact objects
    (executor_output_utils.runtime_artifact_to_dsl_artifact) and back into the next task's
    input RuntimeArtifacts (executor_input_utils.dsl_artifact_to_artifact_list) with only a
    schema title; this keeps the whole ArtifactTypeSchema on the object in between.
    """
    from kfp.local import executor_input_utils, executor_output_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    to_dsl = executor_output_utils.runtime_artifact_to_dsl_artifact
    to_list = executor_input_utils.dsl_artifact_to_artifact_list

    def runtime_artifact_to_dsl_artifact(runtime_artifact):
        artifact = to_dsl(runtime_artifact)
        artifact.declared_type = runtime_artifact.type.SerializeToString()
        return artifact

    def dsl_artifact_to_artifact_list(artifact):
        artifact_list = to_list(artifact)
        declared = getattr(artifact, "declared_type", None)
        if declared is not None:
            for runtime_artifact in artifact_list.artifacts:
                runtime_artifact.type.CopyFrom(
                    pipeline_spec_pb2.ArtifactTypeSchema.FromString(declared))
        return artifact_list

    executor_output_utils.runtime_artifact_to_dsl_artifact = runtime_artifact_to_dsl_artifact
    executor_input_utils.dsl_artifact_to_artifact_list = dsl_artifact_to_artifact_list


class Checks:
    """Named checks, one line each, and the `N passed, N failed` count."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, test: Callable[[], Any]) -> Any:
        """Runs test and prints the outcome in one line (with test's result when it is a
        string).

        Args:
          name: what is checked.
          test: returns a result, or raises (AssertionError or any error) when the check fails.

        Returns:
          test's result (True for None), or None if it failed.
        """
        try:
            detail = test()
        except Exception as e:  # a check's failure is reported, not raised
            self.failed += 1
            print(f"[kubeflow-test] FAIL {name}: {type(e).__name__}: "
                  f"{' '.join(str(e).split())[:600]}", flush=True)
            return None
        self.passed += 1
        shown = f": {detail}" if isinstance(detail, str) and detail else ""
        print(f"[kubeflow-test] ok   {name}{shown}", flush=True)
        return detail if detail is not None else True


def compile_spec(image: str, shared: Path, work: Path, pipeline_root: str
                 ) -> tuple[Path, Path, Path]:
    """Compiles the pipeline for the mini set with the Kubeflow command, as a user would.

    Args:
      image: the image every task runs in.
      shared: the test data root (data/cats_vs_dogs_mini, weights/).
      work: a folder for the outputs.
      pipeline_root: the compiled pipeline root.

    Returns:
      (the compiled YAML, the examples folder ingestion wrote, the serving dir).
    """
    from pipeline import run_kubeflow

    spec, serving = work / "pipeline.yaml", work / "serving"
    serving.mkdir(mode=0o1777, parents=True)
    serving.chmod(0o1777)  # the tasks run as uid 1000
    argv = ["--image", image, "--data-dir", str(shared / "data" / "cats_vs_dogs_mini"),
            "--output-dir", str(work / "outputs"), "--serving-dir", str(serving),
            "--pipeline-root", pipeline_root, "--output-file", str(spec),
            "--base-weights", str(shared / "weights" / SMALL_WEIGHTS), *FAST_FLAGS]
    status = run_kubeflow.main(argv)
    if status != 0:
        raise RuntimeError(f"tfx-image-transfer-kubeflow exited {status}")
    examples = next((work / "outputs" / "tfrecords").glob("*/labels.txt")).parent
    return spec, examples, serving


def run_spec(spec: Path, mounts: list[tuple[Path, bool]], root: Path,
             object_store_root: str | None = None, **container_run_args: Any) -> None:
    """Runs the compiled YAML with kfp.local's DockerRunner.

    Args:
      spec: the compiled PipelineSpec.
      mounts: host paths the tasks see at the same path, and whether they are writable.
      root: kfp.local's local pipeline root (bind-mounted into every task by kfp.local).
      object_store_root: instead, this pipeline root in an object store, whose artifacts the
        launcher cycle (tests/kfp_launcher.py, installed by the caller) moves.
      **container_run_args: more of the DockerRunner's container arguments.
    """
    import docker
    from kfp import components, local
    from kfp.local import config

    keep_artifact_types()
    root.mkdir(mode=0o1777)
    root.chmod(0o1777)
    binds = [docker.types.Mount(target=str(p), source=str(p), type="bind", read_only=not rw)
             for p, rw in mounts]
    local.init(runner=local.DockerRunner(user=USER, mounts=binds, **container_run_args),
               pipeline_root=str(root), raise_on_error=True)
    if object_store_root:  # kfp.local.init makes any root a local absolute path
        config.LocalExecutionConfig.instance.pipeline_root = object_store_root
    components.load_component_from_file(str(spec))()


Reader = Callable[[str], "dict[str, Any] | None"]


def local_reader(root: Path) -> Reader:
    """Reads `<task folder>/executor_output.json` of the one run under a local pipeline root."""
    [run] = [p for p in root.iterdir() if p.is_dir()]

    def read(folder: str) -> dict[str, Any] | None:
        path = run / folder / "executor_output.json"
        return json.loads(path.read_text()) if path.is_file() else None

    return read


def task_outputs(spec: Path, read: Reader) -> dict[str, dict[str, Any]]:
    """Each task's executor output.

    Args:
      spec: the compiled PipelineSpec (its tasks and their declared outputs).
      read: a task folder's executor output, or None (local_reader, or the object store's).

    Returns:
      task name -> its executor output (JSON).

    Raises:
      AssertionError: a task wrote no executor output (it did not finish, whatever kfp.local
        logged), or one without every output artifact its component declares.
    """
    import yaml
    from kfp.local.executor_input_utils import get_local_task_resource_name

    pipeline = next(yaml.safe_load_all(spec.read_text()))
    outputs, problems = {}, []
    for task, task_spec in pipeline["root"]["dag"]["tasks"].items():
        component = task_spec["componentRef"]["name"]
        # kfp.local names a task's folder by cutting a `comp-` prefix off the component's name,
        # which TFX's names do not have: its first five characters go.
        written = read(get_local_task_resource_name(component))
        if written is None:
            problems.append(f"{task} wrote no executor_output.json")
            continue
        outputs[task] = written
        declared = pipeline["components"][component].get("outputDefinitions", {})
        absent = set(declared.get("artifacts", {})) - set(written.get("artifacts", {}))
        if absent:
            problems.append(f"{task}'s executor output lacks {', '.join(sorted(absent))}")
    assert not problems, "; ".join(problems)
    return outputs


def artifact(outputs: dict[str, dict[str, Any]], task: str, key: str) -> dict[str, Any]:
    """The one artifact a task wrote under key (uri, metadata)."""
    [written] = outputs[task]["artifacts"][key]["artifacts"]
    return written


def check_run(checks: Checks, spec: Path, read: Reader, exists: Callable[[str], bool],
              fetch: Callable[[str], Path], shared: Path) -> None:
    """The run's checks: every task finished, both blessings, the push, the pushed model.

    Args:
      checks: where the outcomes go.
      spec: the compiled PipelineSpec.
      read: a task folder's executor output (see task_outputs).
      exists: whether a file exists at a URI or path (the pipeline root's, the serving dir's).
      fetch: a local copy of the pushed version (its path or URI).
      shared: the test data root.
    """
    outputs = checks.check("every task wrote its executor_output.json with all its outputs",
                           lambda: task_outputs(spec, read))
    if outputs is None:
        return

    def blessed(task: str, key: str, marker: str) -> str:
        uri = artifact(outputs, task, key)["uri"]
        assert exists(f"{uri}/{marker}"), f"{uri} has no {marker}"
        return uri

    checks.check("the Evaluator blessed the model",
                 lambda: blessed("Evaluator", "blessing", "BLESSED"))
    checks.check("the serving check wrote an InfraBlessing",
                 lambda: blessed("ServingCheck", "blessing", "INFRA_BLESSED"))

    def pushed() -> str:
        metadata = artifact(outputs, "Pusher", "pushed_model")["metadata"]
        assert metadata.get("pushed") == 1, f"Pusher metadata {metadata}"
        return metadata["pushed_destination"]

    destination = checks.check("the Pusher pushed a version into the serving dir", pushed)
    if not destination:
        return
    photos = sorted((shared / "data" / "cats_vs_dogs_mini" / "validation").glob("*/*.jpg"))[:3]

    def answers() -> str:
        result = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "check-pushed-model"), "--version-dir",
             str(fetch(destination)), *map(str, photos)], capture_output=True, text=True,
            timeout=600)
        assert result.returncode == 0, (result.stdout + result.stderr)[-600:]
        return result.stdout.strip().splitlines()[-1]

    def in_serving_dir() -> str:
        assert exists(f"{destination}/saved_model.pb"), f"no {destination}/saved_model.pb"
        return destination

    checks.check("the version is in the serving dir, whole", in_serving_dir)
    checks.check("the pushed version loads as TF Serving loads it and answers", answers)


def run_on_local_root(checks: Checks, image: str, shared: Path, work: Path) -> None:
    """The compiled pipeline on kfp.local's own local pipeline root."""
    compiled = checks.check(
        "[local root] tfx-image-transfer-kubeflow compiles the pipeline for the mini set",
        lambda: compile_spec(image, shared, work, "gs://kfp-local-unused/root"))
    if not compiled:
        return
    spec, examples, serving = compiled
    root = work / "kfp_root"
    mounts = [(examples, False), (shared / "weights" / SMALL_WEIGHTS, False), (serving, True)]
    if checks.check(f"[local root] kfp.local's DockerRunner ran the compiled spec in {image} "
                    "as uid 1000", lambda: run_spec(spec, mounts, root)):
        check_run(checks, spec, local_reader(root), lambda path: Path(path).exists(), Path,
                  shared)


def run_on_minio_root(checks: Checks, image: str, shared: Path, work: Path) -> None:
    """The compiled pipeline on open-source Kubeflow's storage: the pipeline root, the examples,
    the base weights and the serving dir all in a MinIO bucket (moto's S3 server on loopback),
    each step inside the KFP launcher's download-run-upload cycle (tests/kfp_launcher.py)."""
    import boto3  # noqa: F401  (fails here, not in a thread, if the dev tools are missing)
    from kfp.local import docker_task_handler
    from moto.server import ThreadedMotoServer

    from pipeline import run_kubeflow
    from tests import kfp_launcher

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        store = kfp_launcher.ObjectStore(f"http://{host}:{port}", scheme="minio")
        store.client.create_bucket(Bucket=MINIO_BUCKET)
        bucket = f"minio://{MINIO_BUCKET}"
        spec = work / "pipeline.yaml"

        def compile_on_minio() -> str:
            # Ingestion writes the TFRecords locally; the user copies them and the weights to
            # the bucket and compiles with every location there, reading it through the S3 API.
            _, examples, _ = compile_spec(image, shared, work / "ingest", MINIO_ROOT)
            store.upload(examples, f"{bucket}/data/{examples.name}")
            store.upload(shared / "weights" / SMALL_WEIGHTS, f"{bucket}/weights/{SMALL_WEIGHTS}")
            argv = ["--image", image, "--examples-dir", f"{bucket}/data/{examples.name}",
                    "--base-weights", f"{bucket}/weights/{SMALL_WEIGHTS}",
                    "--serving-dir", f"{bucket}/serving", "--pipeline-root", MINIO_ROOT,
                    "--s3-endpoint", store.endpoint, "--output-file", str(spec),
                    "--output-dir", str(work / "outputs"), *FAST_FLAGS]
            env = {"AWS_ENDPOINT_URL": store.endpoint, **store.credentials}
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                assert run_kubeflow.main(argv) == 0, "tfx-image-transfer-kubeflow failed"
            finally:
                for k, v in saved.items():
                    os.environ.pop(k) if v is None else os.environ.update({k: v})
            return f"examples, weights and serving dir in {bucket}"

        if not checks.check(f"[{MINIO_ROOT}] tfx-image-transfer-kubeflow compiles the pipeline "
                            "with every location in the bucket", compile_on_minio):
            return
        scratch = work / "pods"
        scratch.mkdir()
        # The secret Kubeflow keeps MinIO's credentials in, as the cluster would hold it.
        secrets = {run_kubeflow.KFP_MINIO_SECRET: {
            "accesskey": store.credentials["AWS_ACCESS_KEY_ID"],
            "secretkey": store.credentials["AWS_SECRET_ACCESS_KEY"]}}
        docker_task_handler.DockerTaskHandler = kfp_launcher.launcher_handler(
            store, scratch, kfp_launcher.pod_environment(spec, secrets))
        kfp_launcher.read_outputs_from(store)
        # The pods reach the bucket at 127.0.0.1 on the host's network: no host path is mounted.
        ran = checks.check(
            f"[{MINIO_ROOT}] kfp.local ran every step in {image} as uid 1000 between the "
            "launcher's download and upload (moto's S3 server on loopback)",
            lambda: run_spec(spec, [], work / "kfp_root", MINIO_ROOT, network_mode="host"))
        if not ran:
            return
        [run] = {key.split("/")[2] for key in store.keys(f"{MINIO_ROOT}/")}

        def read(folder: str) -> dict[str, Any] | None:
            uri = f"{MINIO_ROOT}/{run}/{folder}/executor_output.json"
            return store.read_json(uri) if store.keys(uri) else None

        def fetch(uri: str) -> Path:
            local = work / "fetched" / uri.rsplit("/", 1)[-1]
            assert store.download(uri, local) > 0, f"nothing at {uri}"
            return local

        check_run(checks, spec, read, lambda uri: bool(store.keys(uri)), fetch, shared)
        checks.check(f"[{MINIO_ROOT}] a file a step writes outside its output artifacts is lost",
                     lambda: kfp_launcher.probe_lost_files(store, image, USER, scratch,
                                                           f"{bucket}/probe"))
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Compiles, runs and checks; returns 0 only if every check passed."""
    parser = argparse.ArgumentParser(prog="kubeflow-test", description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--shared", required=True, type=Path,
                        help="the test data root (data/cats_vs_dogs_mini, weights/)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="kept for inspection (default: a temporary folder)")
    parser.add_argument("--roots", default="local,minio",
                        help="which pipeline roots to run on: local (kfp.local's own), minio")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kubeflow-test-", dir="/tmp"))
    runs = {"local": run_on_local_root, "minio": run_on_minio_root}
    roots = args.roots.split(",")
    if not roots or set(roots) - set(runs):
        parser.error(f"--roots takes names from {','.join(runs)}")
    checks = Checks()
    for name in roots:
        (work / name).mkdir(parents=True, exist_ok=True)
        runs[name](checks, args.image, args.shared.resolve(), work / name)
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
