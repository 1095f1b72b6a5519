"""Compile the pipeline for Kubeflow Pipelines (KubeflowV2DagRunner) and optionally start a run.

    tfx-image-transfer-kubeflow --image REGISTRY/tfx-image-transfer:TAG \
        --examples-dir gs://BUCKET/tfrecords/<fingerprint> \
        --pipeline-root gs://BUCKET/pipeline_root --serving-dir gs://BUCKET/serving

(`python pipeline/run_kubeflow.py` is the same command.) The pipeline is the same
`create_pipeline` that run_local.py runs, with the same flags for every
knob; each component runs in the --image container (see the Dockerfile).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from contract.knobs import PER_RUN_KNOBS
from pipeline.config import (
    SERVING_CHECKS,
    SESSION_CHECK,
    TF_SERVING_IMAGE,
    PipelineConfig,
    absolute,
    add_flags,
    config_from_args,
)

YAML_SUFFIXES = (".yaml", ".yml")
# Every step's container command: TFX's Kubeflow V2 entry point at the launcher's local paths.
ENTRY_POINT = ["python", "-m", "pipeline.kubeflow_entrypoint"]
# Object stores the Kubeflow Pipelines backend takes as a pipeline root (its launcher stages
# their artifacts at local paths: pipeline/kubeflow_entrypoint.py).
KFP_ROOT_SCHEMES = ("gs", "s3", "minio")
# KFP's own MinIO, as the pods of a Kubeflow install reach it, and the secret that holds its
# credentials (keys accesskey and secretkey) in every Kubeflow Pipelines namespace.
KFP_MINIO_ENDPOINT = "http://minio-service.kubeflow:9000"
KFP_MINIO_SECRET = "mlpipeline-minio-artifact"


@dataclass(frozen=True)
class StoreAccess:
    """How the steps reach s3:// and minio:// locations: the S3 API endpoint (None: AWS's) and
    the Kubernetes secret with the credentials."""

    endpoint: str | None
    secret: str


class ExamplesDirError(ValueError):
    """--examples-dir is not a folder that ingestion wrote."""


class StorageError(ValueError):
    """A location the components cannot use, or a storage error, in one line."""


def check_storage(flag: str, uri: str, pipeline_root: bool = False, staged: bool = False
                  ) -> None:
    """Refuses locations the pods cannot use: a local or unknown pipeline root, and, elsewhere,
    file systems TensorFlow lacks.

    The pipeline root holds only artifacts, which the KFP launcher stages at local paths for
    every step (pipeline/kubeflow_entrypoint.py), so any of KFP_ROOT_SCHEMES works there. The
    locations the steps read or write themselves (examples, serving dir, weights) may also be on
    an object store the entry point stages (pipeline/object_store.py); the others (the output
    dir, the spec) are this command's, through tf.io.gfile.

    Args:
      flag: the flag that named the location, for the message.
      uri: a local path or a URI.
      pipeline_root: the location is the pipeline root, which Kubeflow Pipelines needs in
        object storage.
      staged: the location is a step's parameter, which s3:// and minio:// may hold.

    Raises:
      StorageError: one line naming the flag and why.
    """
    import tensorflow as tf

    from pipeline import object_store

    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    roots = " or ".join(f"{s}://" for s in KFP_ROOT_SCHEMES)
    if pipeline_root and not scheme:
        raise StorageError(
            f"{flag} {uri} is local: Kubeflow Pipelines keeps artifacts in object storage and "
            f"refuses a local pipeline root; pass {roots}BUCKET/PATH")
    if pipeline_root and scheme not in KFP_ROOT_SCHEMES:
        raise StorageError(f"{flag} {uri}: a pipeline root must be in {roots}BUCKET/PATH")
    if staged and scheme in object_store.SCHEMES:
        return
    if not pipeline_root and scheme and scheme not in tf.io.gfile.get_registered_schemes():
        can = " or ".join(f"{s}://" for s in KFP_ROOT_SCHEMES
                          if s in tf.io.gfile.get_registered_schemes())
        raise StorageError(
            f"{flag} {uri}: TensorFlow {tf.__version__} has no {scheme}:// file system, and "
            f"{flag} is written by this command; use {can}, or a local path")


def one_line(error: Exception) -> str:
    """A storage error (tf.errors.OpError, OSError) as one line, without TF's op context."""
    message = getattr(error, "message", None) or str(error)
    return " ".join(message.split())


def build_parser() -> argparse.ArgumentParser:
    """run_local.py's flags (one per config knob) plus the Kubeflow-only ones.

    Returns:
      The parser; arguments it does not know are Beam's (parse_known_args).
    """
    parser = argparse.ArgumentParser(
        prog="tfx-image-transfer-kubeflow",
        description="Compile the TFX pipeline for Kubeflow Pipelines and optionally start a run. "
                    "Arguments not listed here go to the Beam job that converts --data-dir.")
    add_flags(parser)
    kubeflow = parser.add_argument_group("Kubeflow")
    kubeflow.add_argument("--image", required=True,
                          help="Container image every component runs in (built from Dockerfile).")
    kubeflow.add_argument("--examples-dir", default=None,
                          help="Converted TFRecords: a <tfrecords dir>/<fingerprint>/ folder "
                               "written by ingestion (train/ eval/ test/ labels.txt). "
                               "Default: convert --data-dir now into OUTPUT_DIR/tfrecords.")
    kubeflow.add_argument("--pipeline-root", default=None,
                          help="Where the components' artifacts go (default: "
                               "OUTPUT_DIR/pipeline_root).")
    kubeflow.add_argument("--output-file", default=None,
                          help="The compiled pipeline: .yaml (PipelineSpec, for Kubeflow) or "
                               ".json (PipelineJob, for Vertex AI). Default: PIPELINE_NAME.yaml.")
    kubeflow.add_argument("--submit", action="store_true",
                          help="Upload the compiled pipeline and start a run (kfp.Client).")
    kubeflow.add_argument("--host", default=None,
                          help="Kubeflow Pipelines API endpoint for --submit (default: the "
                               "in-cluster one).")
    kubeflow.add_argument("--serving-check", choices=SERVING_CHECKS, default=SESSION_CHECK,
                          help="What blesses a model as servable before the push: 'session' "
                               "loads it in the component's pod the way TF Serving does and "
                               "sends requests (ServingCheck); 'kubernetes' runs TFX's "
                               f"InfraValidator, which starts {TF_SERVING_IMAGE} in a pod of "
                               "the run's namespace (its service account must be allowed to "
                               "create pods) and sends from_examples requests. "
                               "Default: %(default)s.")
    kubeflow.add_argument("--s3-endpoint", default=None,
                          help="The S3 API endpoint the steps reach s3:// and minio:// "
                               "examples, weights and serving dirs at (AWS_ENDPOINT_URL in each "
                               f"step). Default: {KFP_MINIO_ENDPOINT} (Kubeflow's MinIO) for "
                               "minio:// ones, AWS's for s3:// ones. This command reads "
                               "--examples-dir itself through AWS_ENDPOINT_URL and the AWS_* "
                               "credentials of its own environment.")
    kubeflow.add_argument("--s3-secret", default=KFP_MINIO_SECRET,
                          help="The Kubernetes secret (keys accesskey and secretkey) that gives "
                               "each step AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for those "
                               "locations. Default: %(default)s (Kubeflow's MinIO).")
    return parser


def read_class_names(examples_dir: str) -> list[str]:
    """Class names from the labels.txt that ingestion writes beside the splits.

    Args:
      examples_dir: a folder ingestion wrote (labels.txt, train/, eval/, test/).

    Returns:
      The class names by label index.

    Raises:
      ExamplesDirError: labels.txt or a split folder is missing, or it lists under 2 classes.
    """
    import tensorflow as tf

    from contract import features
    from contract.labels import LABELS_FILE, parse_labels
    from pipeline import object_store

    labels = os.path.join(examples_dir, LABELS_FILE)
    if object_store.is_object_store(examples_dir):
        found = object_store.keys(object_store.client(examples_dir), examples_dir)
        key = object_store.split(examples_dir)[1]
        there = {name[len(key):].lstrip("/").split("/", 1)[0] for name in found}
        missing = [] if LABELS_FILE in there else [LABELS_FILE]
        missing += [f"{s}/" for s in features.SPLITS if s not in there]
    else:
        missing = [] if tf.io.gfile.exists(labels) else [LABELS_FILE]
        missing += [f"{s}/" for s in features.SPLITS
                    if not tf.io.gfile.isdir(os.path.join(examples_dir, s))]
    if missing:
        raise ExamplesDirError(
            f"{examples_dir!r} lacks {', '.join(missing)}: --examples-dir must be a "
            "<tfrecords dir>/<fingerprint>/ folder written by ingestion (or pass "
            "--data-dir to convert an image folder)")
    if object_store.is_object_store(labels):
        names = parse_labels(object_store.read_bytes(labels).decode())
    else:
        with tf.io.gfile.GFile(labels) as f:
            names = parse_labels(f.read())
    if len(names) < 2:
        raise ExamplesDirError(f"{labels} lists {len(names)} class(es); need at least 2")
    return names


def runtime_parameters(cfg: PipelineConfig) -> dict[str, Any]:
    """The knobs a run may set (contract.knobs.PER_RUN_KNOBS), as typed runtime parameters of
    the compiled pipeline, each defaulting to the config's value.

    Args:
      cfg: the run's config.

    Returns:
      knob name -> data_types.RuntimeParameter of that name, for create_pipeline.
    """
    from tfx.orchestration import data_types

    return {name: data_types.RuntimeParameter(name=name, ptype=kind, default=getattr(cfg, name))
            for name, kind in PER_RUN_KNOBS.items()}


def add_store_access(pipeline_spec: dict[str, Any], access: StoreAccess) -> dict[str, Any]:
    """Gives every step the object store's endpoint (an env var of its container) and
    credentials (the secret as env vars, through the Kubernetes platform spec that the Kubeflow
    Pipelines backend applies, as kfp-kubernetes' use_secret_as_env writes it).

    Args:
      pipeline_spec: the compiled PipelineSpec (changed in place).
      access: the endpoint and the secret.

    Returns:
      The PlatformSpec document that goes after the PipelineSpec in the YAML.
    """
    executors = {name: executor["container"]
                 for name, executor in pipeline_spec["deploymentSpec"]["executors"].items()
                 if "container" in executor}
    if access.endpoint:
        for container in executors.values():
            container.setdefault("env", []).append(
                {"name": "AWS_ENDPOINT_URL", "value": access.endpoint})
    secret_as_env = [{"secretName": access.secret, "keyToEnv": [
        {"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
        {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"}]}]
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {
        name: {"secretAsEnv": secret_as_env} for name in executors}}}}}


def compile_pipeline(cfg: PipelineConfig, examples_dir: str, class_names: list[str], image: str,
                     output_file: str, pipeline_root: str | None = None,
                     serving_check: str = SESSION_CHECK,
                     store_access: StoreAccess | None = None) -> str:
    """Writes the Kubeflow spec of `create_pipeline` to output_file and returns its path.

    The spec is PipelineSpec schema 2.1 (what kfp 2.x compiles and the Kubeflow Pipelines 2.x
    backend runs), with the knobs a run may set (`runtime_parameters`) as optional root
    parameters.

    Args:
      cfg: the run's config.
      examples_dir: the converted TFRecords, as the pods see them.
      class_names: the class names by label index.
      image: the container image every component runs in.
      output_file: .yaml or .yml for the PipelineSpec (what kfp.Client and the Kubeflow UI
        take), anything else (.json) for the whole PipelineJob (Vertex AI's format).
      pipeline_root: the artifacts' root, named in both (default cfg.pipeline_root).
      serving_check: "session" (ServingCheck) or "kubernetes" (TFX's InfraValidator).
      store_access: how the steps reach s3:// and minio:// locations, if any (.yaml only).

    Returns:
      output_file.
    """
    import tensorflow as tf
    import yaml
    from tfx import v1 as tfx

    from ingestion.beam_options import beam_pipeline_args
    from pipeline import definition

    pipeline_root = pipeline_root or cfg.pipeline_root
    parameters = runtime_parameters(cfg)
    pipeline = definition.create_pipeline(
        cfg, examples_dir, class_names, metadata_path=None,  # Kubeflow provides ML Metadata
        beam_pipeline_args=beam_pipeline_args(cfg.beam_workers), serving_check=serving_check,
        runtime_parameters=parameters)
    defaults = {name: parameter.default for name, parameter in parameters.items()}
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image, default_commands=ENTRY_POINT, use_pipeline_spec_2_1=True))
    job = runner.run(pipeline, parameter_values=defaults, write_out=False)
    # The runner puts the root and the parameters' values only into the PipelineJob's
    # runtimeConfig, which the YAML output drops; defaultPipelineRoot and each parameter's
    # defaultValue keep them in the spec itself.
    job["runtimeConfig"]["gcsOutputDirectory"] = pipeline_root
    job["pipelineSpec"]["defaultPipelineRoot"] = pipeline_root
    for name, parameter in job["pipelineSpec"]["root"]["inputDefinitions"]["parameters"].items():
        parameter.update(defaultValue=defaults[name], isOptional=True)
    parent = os.path.dirname(output_file)
    if parent:
        tf.io.gfile.makedirs(parent)
    documents = [job["pipelineSpec"]]
    if store_access:
        documents.append(add_store_access(job["pipelineSpec"], store_access))
    with tf.io.gfile.GFile(output_file, "w") as f:
        if output_file.endswith(YAML_SUFFIXES):
            f.write(yaml.safe_dump_all(documents, sort_keys=True))
        else:
            f.write(json.dumps(job, indent=2, sort_keys=True))
    return output_file


def submit(package: str, host: str | None, pipeline_root: str) -> str:
    """Uploads a compiled YAML package, starts a run and returns its id.

    Args:
      package: the compiled PipelineSpec (.yaml).
      host: the Kubeflow Pipelines API endpoint; None for the in-cluster one.
      pipeline_root: the run's artifact root.

    Returns:
      The run id.
    """
    import kfp

    result = kfp.Client(host=host).create_run_from_pipeline_package(
        package, pipeline_root=pipeline_root)
    return result.run_id


def store_access(args: argparse.Namespace, read_in_pods: dict[str, str], output_file: str
                 ) -> StoreAccess | None:
    """How the steps reach the s3:// and minio:// locations among read_in_pods, if any.

    Args:
      args: the parsed flags (--s3-endpoint, --s3-secret).
      read_in_pods: flag -> the location the steps read or write themselves.
      output_file: the spec's path; the object stores need a Kubeflow Pipelines .yaml.

    Returns:
      The access to compile in, or None when no location is on an object store.

    Raises:
      StorageError: such a location with a .json (Vertex AI) spec.
    """
    from pipeline import object_store

    on_store = {flag: path for flag, path in read_in_pods.items()
                if object_store.is_object_store(path)}
    if not on_store:
        return None
    if not output_file.endswith(YAML_SUFFIXES):
        flag, path = next(iter(on_store.items()))
        raise StorageError(f"{flag} {path}: s3:// and minio:// locations are for Kubeflow "
                           "Pipelines (a .yaml --output-file); Vertex AI reads gs://")
    minio = any(path.startswith("minio://") for path in on_store.values())
    return StoreAccess(args.s3_endpoint or (KFP_MINIO_ENDPOINT if minio else None),
                       args.s3_secret)


def _check_kubeflow_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                         beam_args: list[str]) -> str:
    """Exits with a usage error on conflicting flags; returns the output file."""
    if args.examples_dir and args.data_dir:
        parser.error("pass --examples-dir (converted TFRecords) or --data-dir (images), not both")
    if beam_args and args.examples_dir:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    output_file = args.output_file or f"{args.pipeline_name}.yaml"
    if not output_file.endswith((*YAML_SUFFIXES, ".json")):
        parser.error("--output-file must end in .yaml, .yml or .json")
    if args.submit and not output_file.endswith(YAML_SUFFIXES):
        parser.error("--submit needs a .yaml --output-file (kfp.Client reads a PipelineSpec)")
    if args.host and not args.submit:
        parser.error("--host is only used with --submit")
    return output_file


def main(argv: list[str] | None = None) -> int:
    """Flags -> config -> examples (given, or converted now) -> spec file [-> run].

    Args:
      argv: the arguments after the program name (default: sys.argv[1:]); unknown ones go
        to the Beam conversion job.

    Returns:
      The exit status: 0, or 2 (one line) if the examples or the data cannot be had, or a
      location is one the components cannot use or reach. Bad flags exit with a usage error
      (status 2).
    """
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    output_file = _check_kubeflow_args(parser, args, beam_args)
    from trainer.model import IMAGENET, NO_WEIGHTS

    weights_file = args.base_weights not in (IMAGENET, NO_WEIGHTS)
    try:
        cfg = config_from_args(
            args, output_dir=absolute(args.output_dir),
            serving_dir=absolute(args.serving_dir) if args.serving_dir else None,
            base_weights=absolute(args.base_weights) if weights_file else args.base_weights)
    except ValueError as e:
        parser.error(str(e))

    from ingestion.beam_options import beam_pipeline_args
    from ingestion.convert import IngestError
    from pipeline import object_store
    from pipeline.data_source import DataSourceError, ingest
    from pipeline.run_local import configure_logging

    configure_logging()
    import tensorflow as tf

    pipeline_root = absolute(args.pipeline_root or cfg.pipeline_root)
    # Where the steps read or write themselves (the pipeline root's artifacts are the launcher's).
    read_in_pods = {"--serving-dir": cfg.serving_model_dir}
    if weights_file:  # the Trainer reads it with tf.io.gfile
        read_in_pods["--base-weights"] = cfg.base_weights
    if cfg.predict_dir:  # BatchPredict reads it
        read_in_pods["--predict-dir"] = cfg.predict_dir
    try:
        check_storage("--pipeline-root", pipeline_root, pipeline_root=True)
        for flag, path in [*read_in_pods.items(), ("--examples-dir", args.examples_dir or "")]:
            check_storage(flag, path, staged=True)
        for flag, path in [("--output-dir", cfg.output_dir), ("--output-file", output_file)]:
            check_storage(flag, path)
        if args.examples_dir:
            examples_dir = absolute(args.examples_dir)
            class_names = read_class_names(examples_dir)
        else:
            ingested = ingest(cfg, beam_args or beam_pipeline_args(cfg.beam_workers))
            examples_dir, class_names = ingested.output_dir, ingested.report["classes"]
        read_in_pods["--examples-dir"] = examples_dir
        access = store_access(args, read_in_pods, output_file)
        for flag, path in read_in_pods.items():
            if "://" not in path:
                print(f"note: {flag} {path} is local: the components' pods must see it at this "
                      "path (a mounted volume, or baked into the image)", file=sys.stderr)
        compile_pipeline(cfg, examples_dir, class_names, args.image, output_file, pipeline_root,
                         args.serving_check, access)
    except (ExamplesDirError, IngestError, DataSourceError, StorageError,
            object_store.ObjectStoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (tf.errors.OpError, OSError) as e:  # e.g. gs:// unreachable or not permitted
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    check = ("ServingCheck" if args.serving_check == SESSION_CHECK
             else f"InfraValidator on {TF_SERVING_IMAGE}")
    print(f"compiled {output_file}: image {args.image}, examples {examples_dir} "
          f"(classes {class_names}), pipeline root {pipeline_root}, serving check {check}, "
          f"pushes to {cfg.serving_model_dir}")
    if args.submit:
        print(f"started run {submit(output_file, args.host, pipeline_root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
