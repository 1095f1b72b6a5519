"""The Beam steps with their functions pickled into SDK worker processes, as on Dataflow, Flink
or Spark: ingestion, StatisticsGen's executor and the Evaluator's TFMA run on Beam's portable
runner with an external worker pool give what the in-memory FnApiRunner gives on the same
input. The pool is another process on loopback, or, where TFX_IMAGE_TRANSFER_BEAM_POOL names
one, a pool in a container of the project's image (`make image-test` starts it)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from apache_beam.options.pipeline_options import PipelineOptions
from google.protobuf import json_format
from tfx.components.statistics_gen.executor import Executor as StatisticsGenExecutor
from tfx.components.util.examples_utils import CUSTOM_SPLIT_PATTERN_PROPERTY_NAME
from tfx.types import artifact_utils, standard_artifacts

from contract import features
from ingestion.beam_options import beam_pipeline_args
from ingestion.convert import IngestResult, convert_image_tree
from tests.conftest import REPO, ExportedModel

pytestmark = pytest.mark.slow

# Beam's worker pool (what `python -m apache_beam.runners.worker.worker_pool_main` serves),
# bound to 127.0.0.1 only (worker_pool_main binds every interface); port 0 picks a free one.
# use_process: each worker the runner asks for is a `python` child of this process.
POOL_SCRIPT = textwrap.dedent("""
    import logging
    from concurrent import futures
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
    logging.basicConfig(level=logging.INFO)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    port = server.add_insecure_port("127.0.0.1:0")
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        BeamFnExternalWorkerPoolServicer(use_process=True), server)
    server.start()
    print(port, flush=True)
    server.wait_for_termination()
""")
WORKER_STARTED = "Starting worker with command"
FLOAT_TOLERANCE = 1e-6


# A worker pool started outside the tests, in a container of the project's image
# (scripts/image test): its 127.0.0.1:PORT, and the file its log goes to.
EXTERNAL_POOL_ENV = "TFX_IMAGE_TRANSFER_BEAM_POOL"
EXTERNAL_POOL_LOG_ENV = "TFX_IMAGE_TRANSFER_BEAM_POOL_LOG"
POOL_START_SECONDS = 120


@dataclass(frozen=True)
class WorkerPool:
    """The worker pool: its process (None for one in a container), its address and its log
    (the workers' too)."""

    pid: int | None
    address: str
    log: Path

    def beam_args(self) -> list[str]:
        """Beam options that run every step in workers this pool starts."""
        return ["--runner=PortableRunner", "--job_endpoint=embed",
                "--environment_type=EXTERNAL", f"--environment_config={self.address}"]

    def workers_started(self) -> int:
        """How many SDK worker processes the pool has started so far."""
        return self.log.read_text(errors="replace").count(WORKER_STARTED)


def _wait_for_port(address: str) -> None:
    """Returns once address accepts connections; fails after POOL_START_SECONDS."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + POOL_START_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
            return
        time.sleep(0.5)
    pytest.fail(f"no worker pool at {address} after {POOL_START_SECONDS} s")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    """The worker pool EXTERNAL_POOL_ENV names, else one started here in its own process group
    and stopped (workers included) at the end.

    Args:
      tmp_path_factory: pytest's, for the pool's log.

    Returns:
      The pool (a generator: one started here is stopped when the module's tests are done).
    """
    if os.environ.get(EXTERNAL_POOL_ENV):
        address = os.environ[EXTERNAL_POOL_ENV]
        _wait_for_port(address)
        yield WorkerPool(None, address, Path(os.environ[EXTERNAL_POOL_LOG_ENV]))
        return
    log = tmp_path_factory.mktemp("worker_pool") / "worker_pool.log"
    # The pool starts workers as `python`: this interpreter, importing this checkout.
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT], stdout=subprocess.PIPE,
                                   stderr=stderr, env=env, cwd=REPO, start_new_session=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else b""
        assert line.strip().isdigit(), f"worker pool did not start: {log.read_text()[-3000:]}"
        yield WorkerPool(process.pid, f"127.0.0.1:{int(line)}", log)
    finally:
        process.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def test_steps_run_in_worker_processes(pool: WorkerPool, tmp_path: Path) -> None:
    def where_am_i(_: object) -> str:
        """A worker's pid, its parent's, and what its PID namespace's first process runs (a
        nested function: pickled by value, as the workers may not have this module)."""
        with open("/proc/1/cmdline", "rb") as f:
            first = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        return json.dumps([os.getpid(), os.getppid(), first])

    before = pool.workers_started()
    out = tmp_path / "where"
    with beam.Pipeline(argv=pool.beam_args()) as p:
        _ = (p | beam.Create([0]) | beam.Map(where_am_i)
             | beam.io.WriteToText(str(out), shard_name_template=""))
    pid, parent, first = json.loads(out.read_text())
    assert pid != os.getpid()
    if pool.pid is None:  # in the container, whose first process is the pool
        assert "worker_pool_main" in first, first
    else:
        assert parent == pool.pid  # a worker the pool started
    assert pool.workers_started() > before


def read_examples(output_dir: str) -> dict[str, Counter]:
    """Each split's examples, parsed and serialized again deterministically.

    Args:
      output_dir: a conversion's folder (<split>/*.tfrecord).

    Returns:
      split -> the multiset of its serialized tf.Examples (file names and shards ignored).
    """
    examples = {}
    for split in features.SPLITS:
        records = tf.data.TFRecordDataset(tf.io.gfile.glob(f"{output_dir}/{split}/*"))
        examples[split] = Counter(
            tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
            for r in records)
    return examples


def test_ingestion(pool: WorkerPool, mini_copy: Path, mini_tfrecords: IngestResult,
                   tmp_path: Path) -> None:
    # mini_tfrecords is the in-memory conversion of the same folder.
    before = pool.workers_started()
    result = convert_image_tree(str(mini_copy), str(tmp_path), beam_args=pool.beam_args())
    assert not result.reused and pool.workers_started() > before
    # Same root and fingerprint: the whole report, every file's outcome included.
    assert result.report == mini_tfrecords.report
    examples = read_examples(result.output_dir)
    assert examples == read_examples(mini_tfrecords.output_dir)
    assert {s: sum(c.values()) for s, c in examples.items()} == result.report["per_split_total"]


def statistics(examples_dir: str, classes: list[str], beam_args: list[str], out: Path
               ) -> dict[str, dict]:
    """StatisticsGen's executor, with the pipeline's StatsOptions, over the ingested splits.

    Args:
      examples_dir: a conversion's folder, read in place (a custom split pattern).
      classes: its class names.
      beam_args: the executor's Beam pipeline arguments.
      out: a new folder for the statistics.

    Returns:
      split -> the statistics as a dict, features sorted by path.
    """
    from pipeline.config import PipelineConfig
    from pipeline.definition import create_pipeline

    pipeline = create_pipeline(PipelineConfig(output_dir=str(out)), examples_dir, classes,
                               metadata_path=str(out / "metadata.sqlite"))
    [stats_gen] = [c for c in pipeline.components if c.id == "StatisticsGen"]
    examples = standard_artifacts.Examples()
    examples.uri = examples_dir
    examples.split_names = artifact_utils.encode_split_names(list(features.SPLITS))
    examples.set_string_custom_property(CUSTOM_SPLIT_PATTERN_PROPERTY_NAME,
                                        json.dumps({s: f"{s}/*" for s in features.SPLITS}))
    stats = standard_artifacts.ExampleStatistics()
    stats.uri = str(out / "statistics")
    executor = StatisticsGenExecutor(StatisticsGenExecutor.Context(
        beam_pipeline_args=beam_args, tmp_dir=str(out / "tmp"), unique_id="1"))
    executor.Do({"examples": [examples]}, {"statistics": [stats]}, stats_gen.exec_properties)
    result = {}
    for split in features.SPLITS:
        proto = tfdv.load_stats_binary(f"{stats.uri}/Split-{split}/FeatureStats.pb")
        for dataset in proto.datasets:
            dataset.features.sort(key=lambda f: tuple(f.path.step))
        result[split] = json_format.MessageToDict(proto)
    return result


def test_statistics_gen(pool: WorkerPool, mini_tfrecords: IngestResult, tmp_path: Path) -> None:
    examples_dir, classes = mini_tfrecords.output_dir, mini_tfrecords.report["classes"]
    in_memory = statistics(examples_dir, classes, beam_pipeline_args(), tmp_path / "memory")
    before = pool.workers_started()
    workers = statistics(examples_dir, classes, pool.beam_args(), tmp_path / "workers")
    assert pool.workers_started() > before
    # Exact: on so few examples the sketches hold every value and the sums are of integers,
    # so the order workers merge in changes nothing.
    assert workers == in_memory
    assert {f["path"]["step"][0] for f in in_memory["train"]["datasets"][0]["features"]} == set(
        features.STATISTICS_FEATURES)


def leaves(value: object, path: str = "") -> dict[str, object]:
    """A nested dict/list flattened.

    Args:
      value: dicts and lists down to leaves.
      path: the prefix of the returned keys.

    Returns:
      {".a.b.0.c": leaf} for each leaf.
    """
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {path: value}
    return {k: v for key, item in items for k, v in leaves(item, f"{path}.{key}").items()}


def evaluate(model: ExportedModel, examples_dir: str, beam_args: list[str], out: Path
             ) -> tuple[dict[tuple[str, str, str], object], bool]:
    """TFMA with the pipeline's eval config on the test split, as the Evaluator runs it
    without a baseline.

    Args:
      model: the exported model.
      examples_dir: a conversion's folder.
      beam_args: TFMA's Beam pipeline arguments.
      out: a new folder for TFMA's output.

    Returns:
      ({(slice key, metric key, field): value} for every metric and plot of every slice,
      whether the model validated).
    """
    from pipeline.config import PipelineConfig
    from pipeline.definition import eval_config

    config = tfma.utils.update_eval_config_with_defaults(
        eval_config(PipelineConfig(), len(model.class_names)), has_baseline=False,
        rubber_stamp=True)
    shared = tfma.default_eval_shared_model(eval_saved_model_path=str(model.version_dir),
                                            eval_config=config)
    tfma.run_model_analysis(shared, config, data_location=f"{examples_dir}/test/*",
                            output_path=str(out), pipeline_options=PipelineOptions(beam_args))
    metrics = {}
    for results, field in ((tfma.load_metrics(str(out)), "metric_keys_and_values"),
                           (tfma.load_plots(str(out)), "plot_keys_and_values")):
        for per_slice in results:
            slice_key = json_format.MessageToJson(per_slice.slice_key, sort_keys=True,
                                                indent=None)
            for kv in getattr(per_slice, field):
                name = json_format.MessageToJson(kv.key, sort_keys=True, indent=None)
                for leaf, value in leaves(json_format.MessageToDict(kv.value)).items():
                    metrics[slice_key, name, leaf] = value
    return metrics, tfma.load_validation_result(str(out)).validation_ok


def test_evaluator(pool: WorkerPool, exported_model: ExportedModel,
                   mini_tfrecords: IngestResult, tmp_path: Path) -> None:
    memory, memory_ok = evaluate(exported_model, mini_tfrecords.output_dir,
                                 beam_pipeline_args(), tmp_path / "memory")
    before = pool.workers_started()
    workers, workers_ok = evaluate(exported_model, mini_tfrecords.output_dir, pool.beam_args(),
                                   tmp_path / "workers")
    assert pool.workers_started() > before
    assert workers_ok == memory_ok
    assert workers.keys() == memory.keys()
    for key, value in memory.items():
        if isinstance(value, float):
            assert workers[key] == pytest.approx(value, abs=FLOAT_TOLERANCE), key
        else:
            assert workers[key] == value, key
    # The confusion matrix plot's key has no name.
    names = {json.loads(name).get("name", "plot") for _, name, _ in memory}
    assert {"accuracy", "auc", "confusion_matrix_at_thresholds", "plot"} <= names, names
    overall_count = ("{}", '{"exampleWeighted": false, "name": "example_count"}', ".doubleValue")
    assert memory[overall_count] == mini_tfrecords.report["per_split_total"]["test"]
