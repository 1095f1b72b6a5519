"""The tests' data: ../shared when it holds it, else downloaded once into a cache.

`resolve_shared()` returns a folder laid out like ../shared:

    data/cats_vs_dogs_mini/{train,validation}/{cats,dogs}/*.jpg   (40/40 train, 20/20 validation)
    weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{0.5,0.35}_224_no_top.h5

That is $TFX_IMAGE_TRANSFER_SHARED (default: `shared` beside the repository) when it holds the
mini set and both weights files; nothing is downloaded then. Otherwise the files are downloaded
into ${XDG_CACHE_HOME:-~/.cache}/tfx-image-transfer/test-data/, each checked against its size
and sha256, and the mini set is built from the TensorFlow tutorial's cats_and_dogs_filtered.zip:
the first 40 train and 20 validation photos of each class, by file name. Later runs reuse it.

$TFX_IMAGE_TRANSFER_TEST_DOWNLOADS names a JSON file that overrides the download table, for a
mirror or to pin the archive's sha256; each entry may give any of url, size and sha256:

    {"cats_and_dogs_filtered.zip": {"url": "https://mirror.example/cats_and_dogs_filtered.zip",
                                    "sha256": "<64 hex digits>"}}

`python -m tests.downloaded_data` prints the folder, or one line on stderr and exits 2.
Standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.config import TUTORIAL_DATA_URL

REPO = Path(__file__).resolve().parents[1]
SHARED_ENV = "TFX_IMAGE_TRANSFER_SHARED"
DOWNLOADS_ENV = "TFX_IMAGE_TRANSFER_TEST_DOWNLOADS"
MINI = Path("data", "cats_vs_dogs_mini")
WEIGHTS_FILES = tuple(f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"
                      for alpha in ("0.5", "0.35"))
# Where keras.applications.MobileNetV2(weights="imagenet") downloads them from (its
# BASE_WEIGHT_PATH; importing Keras to read it would load TensorFlow).
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
ARCHIVE = "cats_and_dogs_filtered.zip"
ARCHIVE_ROOT = "cats_and_dogs_filtered"
PHOTOS_PER_CLASS = {"train": 40, "validation": 20}
CLASSES = ("cats", "dogs")
PROGRESS = "[test data]"


class DataUnavailable(Exception):
    """The test data is neither in the shared folder nor obtainable; str() is one line."""


@dataclass(frozen=True)
class Download:
    """One file to download, with what it must be."""

    name: str
    url: str
    size: int
    sha256: str | None  # None: trusted on first download (recorded in the cache's manifest)


DOWNLOADS = (
    # Its sha256 is unknown here: the first verified download records it, every reuse checks it.
    Download(ARCHIVE, TUTORIAL_DATA_URL, 68_606_236, None),
    Download(WEIGHTS_FILES[0], KERAS_WEIGHTS_URL + WEIGHTS_FILES[0], 3_201_480,
             "279052de2cfa801003aa6cc25cc4d007d35dd0b76f06935268c79788b7642d05"),
    Download(WEIGHTS_FILES[1], KERAS_WEIGHTS_URL + WEIGHTS_FILES[1], 2_019_640,
             "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f"),
)


def configured_shared() -> Path:
    """The shared folder the environment names.

    Returns:
        $TFX_IMAGE_TRANSFER_SHARED, else `shared` beside the repository.
    """
    return Path(os.environ.get(SHARED_ENV, REPO.parent / "shared"))


def cache_dir() -> Path:
    """Where downloads and the mini set built from them are kept.

    Returns:
        ${XDG_CACHE_HOME:-~/.cache}/tfx-image-transfer/test-data.
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "tfx-image-transfer", "test-data")


def required_paths(root: Path) -> list[Path]:
    """The paths a shared folder must hold.

    Args:
        root: A folder laid out like ../shared.

    Returns:
        The mini set's folder and both weights files under root.
    """
    return [root / MINI, *(root / "weights" / name for name in WEIGHTS_FILES)]


def resolve_shared() -> Path:
    """A folder laid out like ../shared with the mini set and both weights files.

    Returns:
        The configured shared folder when it holds them, else the cache's copy (downloaded and
        built first when needed).

    Raises:
        DataUnavailable: Neither is possible; the message is one line saying what is missing,
            where to put it and what was tried.
    """
    shared = configured_shared()
    missing = [path for path in required_paths(shared) if not path.exists()]
    if not missing:
        return shared
    try:
        return _cached_copy(cache_dir(), download_table())
    except DataUnavailable as error:
        raise DataUnavailable(
            f"test data unavailable: {error}. Missing: {', '.join(map(str, missing))}. Put them "
            f"there, or set {SHARED_ENV}=DIR to a folder holding "
            f"{MINI}/{{train,validation}}/{{cats,dogs}}/*.jpg and "
            f"weights/{{{','.join(WEIGHTS_FILES)}}}"
        ) from None


def download_table() -> dict[str, Download]:
    """The files to download: DOWNLOADS with the overrides of $TFX_IMAGE_TRANSFER_TEST_DOWNLOADS.

    Returns:
        File name -> Download.

    Raises:
        DataUnavailable: The override file is unreadable or malformed.
    """
    table = {download.name: download for download in DOWNLOADS}
    path = os.environ.get(DOWNLOADS_ENV)
    if not path:
        return table
    where = f"{DOWNLOADS_ENV}={path}"
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DataUnavailable(f"{where}: {_one_line(error)}") from None
    if not isinstance(overrides, dict):
        raise DataUnavailable(f"{where}: expected a JSON object of file name -> "
                              "{url, size, sha256}")
    types = {"url": str, "size": int, "sha256": str}
    for name, fields in overrides.items():
        if name not in table:
            raise DataUnavailable(f"{where}: unknown file {name!r} (known: {', '.join(table)})")
        if not isinstance(fields, dict):
            raise DataUnavailable(f"{where}: {name}: expected an object {{url, size, sha256}}")
        bad = [key for key, value in fields.items()
               if key not in types or not isinstance(value, types[key])]
        if bad:
            raise DataUnavailable(f"{where}: {name}: bad or unknown fields {bad} (url: string, "
                                  "size: integer, sha256: string)")
        table[name] = dataclasses.replace(table[name], **fields)
    return table


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _cached_copy(cache: Path, table: dict[str, Download]) -> Path:
    root = cache / "shared"
    try:
        for folder in (cache / "downloads", root / "weights", root / MINI.parent):
            folder.mkdir(parents=True, exist_ok=True)
        with _locked(cache):
            # Under the lock nothing is being written: leftovers are from killed runs.
            for folder in (cache, cache / "downloads", root / "weights", root / MINI.parent):
                for leftover in folder.glob(".*.part-*"):
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            recorded = _Recorded(cache / "manifest.json")
            for name in WEIGHTS_FILES:
                _fetch(table[name], root / "weights" / name, recorded)
            _ensure_mini(root, cache / "downloads" / ARCHIVE, table[ARCHIVE], recorded)
    except OSError as error:
        raise DataUnavailable(f"cannot write the cache {cache}: {_one_line(error)}") from None
    return root


class _Recorded:
    """The cache's manifest: name -> {url, size, sha256} of each verified download."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.entries = json.loads(path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def sha256(self, download: Download) -> str | None:
        """The pinned sha256, else the one recorded for a file of the same name and size."""
        entry = self.entries.get(download.name, {})
        return download.sha256 or (entry.get("sha256") if entry.get("size") == download.size
                                   else None)

    def record(self, download: Download, sha256: str) -> None:
        self.entries[download.name] = {"url": download.url, "size": download.size,
                                       "sha256": sha256}
        _write_atomically(self.path, json.dumps(self.entries, indent=1, sort_keys=True) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    part = path.with_name(f".{path.name}.part-{os.getpid()}")
    part.write_text(text)
    os.replace(part, path)


def _fetch(download: Download, dest: Path, recorded: _Recorded) -> None:
    """dest verified: the cached file when it checks out, else a fresh download."""
    expected = recorded.sha256(download)
    if dest.is_file():
        if dest.stat().st_size == download.size and expected and _sha256(dest) == expected:
            return
        dest.unlink()
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    print(f"{PROGRESS} downloading {download.url} ({download.size:,} bytes) to {dest.parent}",
          file=sys.stderr, flush=True)
    try:
        digest, size = hashlib.sha256(), 0
        with urllib.request.urlopen(download.url, timeout=60) as response, part.open("wb") as out:
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) != download.size:
                raise _size_mismatch(download, f"{int(announced):,}")
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > download.size:
                    raise _size_mismatch(download, f"more than {download.size:,}")
                digest.update(chunk)
                out.write(chunk)
        if size != download.size:
            raise _size_mismatch(download, f"{size:,}")
        if expected and digest.hexdigest() != expected:
            raise DataUnavailable(f"sha256 mismatch: {download.name} from {download.url} has "
                                  f"{digest.hexdigest()}, expected {expected}")
        os.replace(part, dest)
    except DataUnavailable:
        raise
    except Exception as error:  # urllib raises OSError, HTTPException, ValueError and more
        raise DataUnavailable(f"downloading {download.url} failed: {_one_line(error)}") from None
    finally:
        part.unlink(missing_ok=True)
    recorded.record(download, digest.hexdigest())


def _size_mismatch(download: Download, got: str) -> DataUnavailable:
    return DataUnavailable(f"size mismatch: {download.name} from {download.url} is {got} bytes, "
                           f"expected {download.size:,}")


def _ensure_mini(root: Path, archive: Path, download: Download, recorded: _Recorded) -> None:
    """root/MINI built from the archive unless its marker says a whole build from it is there."""
    mini, marker = root / MINI, root / MINI.with_name(MINI.name + ".complete")
    with contextlib.suppress(OSError, ValueError):
        built_from = json.loads(marker.read_text()).get("archive_sha256")
        if mini.is_dir() and built_from and built_from == recorded.sha256(download):
            return
    _fetch(download, archive, recorded)
    build = mini.with_name(f".{mini.name}.part-{os.getpid()}")
    try:
        _extract_mini(archive, build, f"{download.name} from {download.url}")
        marker.unlink(missing_ok=True)
        if mini.exists():
            shutil.rmtree(mini)
        os.replace(build, mini)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    _write_atomically(marker, json.dumps({"archive_sha256": recorded.sha256(download)}) + "\n")


def _extract_mini(archive: Path, build: Path, label: str) -> None:
    """The mini layout in build from the archive's first photos of each split and class."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            names = zipped.namelist()
            sums = []
            for split, count in PHOTOS_PER_CLASS.items():
                for cls in CLASSES:
                    prefix = f"{ARCHIVE_ROOT}/{split}/{cls}/"
                    photos = sorted(name for name in names if name.startswith(prefix)
                                    and "/" not in name[len(prefix):] and name.endswith(".jpg"))
                    if not photos:
                        raise DataUnavailable(f"{label} has no photos in {prefix}")
                    if len(photos) < count:
                        raise DataUnavailable(f"{label} has {len(photos)} photos in {prefix}, "
                                              f"{count} needed")
                    (build / split / cls).mkdir(parents=True)
                    for name in photos[:count]:
                        relative = f"{split}/{cls}/{PurePosixPath(name).name}"
                        data = zipped.read(name)
                        (build / relative).write_bytes(data)
                        sums.append(f"{hashlib.sha256(data).hexdigest()}  {relative}\n")
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise DataUnavailable(f"{label} is not a readable zip: {_one_line(error)}") from None
    # As in ../shared's copy (the ingestion tests count it as a file outside the classes).
    (build / "SHA256SUMS").write_text("".join(sums))


def main() -> int:
    """Prints the resolved folder, or the one-line reason on stderr.

    Returns:
        0, or 2 when the test data is unavailable.
    """
    try:
        print(resolve_shared())
    except DataUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
