"""Shared fixtures: the mini data set and weights (../shared, else downloaded), converted data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import contract.keras_env  # noqa: F401  (before TensorFlow loads, as in every package)
from contract.interface import MODEL_NAME
from tests.downloaded_data import DataUnavailable, configured_shared, resolve_shared

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np

    from serving.server.app import LocalServer
    from trainer.config import TrainingConfig

REPO = Path(__file__).resolve().parents[1]
# A failure is reported once the session starts (pytest_sessionstart), as a usage error.
try:
    SHARED, _DATA_ERROR = resolve_shared(), None
except DataUnavailable as error:
    SHARED, _DATA_ERROR = configured_shared(), str(error)
MINI = SHARED / "data" / "cats_vs_dogs_mini"
# Six classes of real scene photos (60 train, 25 validation each); in ../shared only.
SCENES = SHARED / "data" / "scenes_mini"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
ALPHA = 0.5
# The smallest shipped base, for models exported without training (serving tests).
SMALL_WEIGHTS = (SHARED / "weights"
                 / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
SMALL_ALPHA = 0.35
SMALL_IMAGE_SIZE = 96


# Fixtures that export models: a test using any of them is slow (`make test-fast` skips it).
_MODEL_FIXTURES = {"exported_model", "server", "reference", "binary", "lenient_export",
                   "second_export"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the tests that need exported models as slow (the e2e ones are marked by hand)."""
    for item in items:
        if _MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_report_header() -> str:
    """Names the test data's folder (../shared, or the download cache) in pytest's header."""
    return f"test data: {SHARED}"


def pytest_sessionstart(session: pytest.Session) -> None:
    if _DATA_ERROR:
        raise pytest.UsageError(_DATA_ERROR)


def training_config(**overrides: Any) -> TrainingConfig:
    """The Trainer's knobs at the pipeline's defaults, with overrides (e.g. image_size=96)."""
    from pipeline.config import PipelineConfig

    return PipelineConfig(**overrides).training_config()


def small_model_config(**overrides: Any) -> TrainingConfig:
    """The knobs of the small untrained models the serving tests export."""
    return training_config(image_size=SMALL_IMAGE_SIZE, alpha=SMALL_ALPHA,
                           base_weights=str(SMALL_WEIGHTS), **overrides)


def validation_photos() -> list[tuple[Path, str]]:
    """The mini set's 40 validation photos with their class names."""
    return [(p, p.parent.name) for p in sorted((MINI / "validation").glob("*/*.jpg"))]


@pytest.fixture(scope="session")
def mini_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the mini set (../shared is read-only in CI)."""
    dst = tmp_path_factory.mktemp("data") / "mini"
    shutil.copytree(MINI, dst)
    return dst


@pytest.fixture(scope="session")
def mini_tfrecords(mini_copy: Path, tmp_path_factory: pytest.TempPathFactory):
    """The mini set converted once: an IngestResult."""
    from ingestion.convert import convert_image_tree

    return convert_image_tree(str(mini_copy), str(tmp_path_factory.mktemp("tfrecords")))


# Enough signal in one epoch per phase on 80 photos: smaller batches and a larger phase-1 step
# than the tutorial's 32 / 1e-4 (the defaults), phase 2 at the tutorial's 1e-5, and half of
# validation/ as the test split (20 photos).
FAST_ARGS = ["--base-weights", str(WEIGHTS), "--alpha", str(ALPHA), "--epochs", "1",
             "--fine-tune-epochs", "1", "--batch-size", "8", "--learning-rate", "1e-2",
             "--fine-tune-lr-factor", "1e-3", "--validation-test-fraction", "0.5",
             "--min-accuracy", "0.7"]


def run_local(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Runs the local runner (the `tfx-image-transfer` command) in a subprocess."""
    return subprocess.run([sys.executable, "-m", "pipeline.run_local", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@dataclass
class PipelineRun:
    """A finished run_local on the mini set: its output dir, process and summary."""

    output_dir: Path
    process: subprocess.CompletedProcess
    summary: dict

    @property
    def model_base_path(self) -> Path:
        """<serving dir>/<model name>: TF Serving's model base path."""
        return self.output_dir / "serving" / MODEL_NAME


def run_pipeline_on_mini(out: Path, *args: str) -> PipelineRun:
    """A real pipeline run on the mini set (FAST_ARGS, then args) into out, which the caller
    owns."""
    process = run_local("--data-dir", str(MINI), "--output-dir", str(out), *FAST_ARGS, *args)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return PipelineRun(out, process, json.loads((out / "run_summary.json").read_text()))


@dataclass(frozen=True)
class ExportedModel:
    """A model base path holding one exported version, as the Pusher lays it out."""

    base_path: Path  # <dir>/image_classifier
    version: int
    class_names: tuple[str, ...]

    @property
    def version_dir(self) -> Path:
        return self.base_path / str(self.version)


def export_untrained(export_dir: Path, class_names: list[str], seed: int = 7) -> Path:
    """Exports an untrained classifier the way the Trainer does, warmup file included.

    The base is MobileNetV2 alpha 0.35 with its ImageNet weights and the head is random, so
    outputs differ from image to image; nothing is trained, so it takes seconds.
    """
    import keras

    from trainer.export import export_model
    from trainer.model import build_model
    from trainer.warmup import write_warmup_requests

    keras.utils.set_random_seed(seed)
    model = build_model(len(class_names), small_model_config(seed=seed))
    export_model(model, class_names, SMALL_IMAGE_SIZE, str(export_dir))
    photos = [path.read_bytes() for path, _ in validation_photos()[:3]]
    write_warmup_requests(str(export_dir), photos, MODEL_NAME)
    return export_dir


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    """An untrained two-class model exported as version 1 (no pipeline run needed).

    Shared by many tests: read only. Copy the base path (shutil.copytree) to change it.
    """
    base = tmp_path_factory.mktemp("exported") / MODEL_NAME
    export_untrained(base / "1", ["cats", "dogs"])
    return ExportedModel(base, 1, ("cats", "dogs"))


@pytest.fixture(scope="session")
def server(exported_model: ExportedModel) -> Iterator[LocalServer]:
    """The local server on the exported model's base path (read only), on free ports."""
    from serving.server.app import LocalServer
    from tests.serving_helpers import MAX_REQUEST_BYTES

    with LocalServer(str(exported_model.base_path), grpc_port=0, rest_port=0,
                     max_request_bytes=MAX_REQUEST_BYTES) as local:
        yield local


@pytest.fixture(scope="session")
def images() -> list[bytes]:
    """The mini set's 40 validation photos (JPEG bytes)."""
    return [path.read_bytes() for path, _ in validation_photos()]


@pytest.fixture(scope="session")
def reference(exported_model: ExportedModel, images: list[bytes]) -> dict[str, np.ndarray]:
    """The exported model's outputs for `images`, called in-process (TF2's loader)."""
    from tests.serving_helpers import in_process

    return in_process(exported_model.version_dir, images)


S3_BUCKET = "mlpipeline"  # open-source Kubeflow's


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch):
    """moto's S3 server on loopback with bucket S3_BUCKET, and the environment boto3 reads
    (endpoint, credentials) pointing at it.

    Args:
      monkeypatch: pytest's, for the environment.

    Returns:
      A boto3 client of the server (a generator: the server stops after the test).
    """
    from moto.server import ThreadedMotoServer

    from pipeline import object_store

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}",
                        "AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "minio123"}.items():
        monkeypatch.setenv(name, value)
    s3 = object_store.client(f"minio://{S3_BUCKET}")
    s3.create_bucket(Bucket=S3_BUCKET)
    yield s3
    server.stop()
