"""Shared fixtures: the mini data set and offline weights from ../shared, and converted data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import contract.keras_env  # noqa: F401  (before TensorFlow loads, as in every package)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TFX_IMAGE_TRANSFER_SHARED", REPO.parent / "shared"))
MINI = SHARED / "data" / "cats_vs_dogs_mini"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
ALPHA = 0.5
# The smallest shipped base, for models exported without training (serving tests).
SMALL_WEIGHTS = (SHARED / "weights"
                 / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
SMALL_ALPHA = 0.35
SMALL_IMAGE_SIZE = 96


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need a pipeline run are end-to-end (`make test-fast` leaves them out)."""
    for item in items:
        if "pipeline_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [p for p in (MINI, WEIGHTS, SMALL_WEIGHTS) if not p.exists()]
    if missing:
        raise pytest.UsageError(f"test data missing: {missing} (set TFX_IMAGE_TRANSFER_SHARED)")


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
# than the seed's 32 / 1e-4 (the defaults), phase 2 at the seed's 1e-5, and half of
# validation/ as the test split (20 photos).
FAST_ARGS = ["--base-weights", str(WEIGHTS), "--alpha", str(ALPHA), "--epochs", "1",
             "--fine-tune-epochs", "1", "--batch-size", "8", "--learning-rate", "1e-2",
             "--fine-tune-lr-factor", "1e-3", "--validation-test-fraction", "0.5",
             "--min-accuracy", "0.7"]
MODEL_NAME = "image_classifier"


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


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """One real pipeline run on the mini set (FAST_ARGS), shared by the tests that need a
    pushed model. Tests must not modify its output dir; copy what they change."""
    out = tmp_path_factory.mktemp("pipeline") / "run"
    process = run_local("--data-dir", str(MINI), "--output-dir", str(out), *FAST_ARGS)
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
    model = build_model(len(class_names), SMALL_IMAGE_SIZE, SMALL_ALPHA, str(SMALL_WEIGHTS))
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
