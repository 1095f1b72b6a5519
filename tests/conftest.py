"""Shared fixtures: the mini data set and offline weights from ../shared, and converted data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # as every entry point sets it

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TFX_IMAGE_TRANSFER_SHARED", REPO.parent / "shared"))
MINI = SHARED / "data" / "cats_vs_dogs_mini"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
ALPHA = 0.5


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [p for p in (MINI, WEIGHTS) if not p.exists()]
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
    from components.ingest import convert_image_tree

    return convert_image_tree(str(mini_copy), str(tmp_path_factory.mktemp("tfrecords")))
