"""The tests' data without ../shared: downloaded, verified, built into the mini layout, reused.

The downloads are local file:// URLs (a zip laid out as the tutorial's archive, built from the
mini set, and copies of the weights) named by a TFX_IMAGE_TRANSFER_TEST_DOWNLOADS manifest; the
resolver runs as `python -m tests.downloaded_data` in a subprocess, as scripts/image runs it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import downloaded_data
from tests.conftest import MINI, REPO, SMALL_WEIGHTS, WEIGHTS
from tests.downloaded_data import ARCHIVE, DOWNLOADS_ENV, PROGRESS, SHARED_ENV, WEIGHTS_FILES

SPLITS = {"train": 40, "validation": 20}
CLASSES = ("cats", "dogs")


@dataclass
class Sources:
    """The local downloads, the manifest naming them and the folders a run uses."""

    archive: Path
    weights: dict[str, Path]
    manifest: Path
    shared: Path  # empty: the resolver has to download
    cache_home: Path

    @property
    def root(self) -> Path:
        """Where the resolver builds the shared layout."""
        return self.cache_home / "tfx-image-transfer" / "test-data" / "shared"

    def entries(self) -> dict[str, dict]:
        return json.loads(self.manifest.read_text())

    def write_entries(self, entries: dict[str, dict]) -> None:
        self.manifest.write_text(json.dumps(entries))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_archive(path: Path, keep: dict[tuple[str, str], int] | None = None) -> None:
    """The mini set zipped as cats_and_dogs_filtered/<split>/<class>/*.jpg, in reverse name order.

    Files the build must leave out are added: a photo sorting after the real ones in each class
    folder (unless keep is given), one in a subfolder, and a script. keep limits how many real
    photos a (split, class) gets (0: no folder).
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("cats_and_dogs_filtered/vectorize.py", "print('not a photo')\n")
        for split in SPLITS:
            for cls in CLASSES:
                photos = sorted((MINI / split / cls).glob("*.jpg"))
                photos = photos[:(keep or {}).get((split, cls), len(photos))]
                folder = f"cats_and_dogs_filtered/{split}/{cls}/"
                if photos and keep is None:
                    zipped.writestr(f"{folder}~extra.jpg", b"sorts after the real photos")
                if photos:
                    zipped.writestr(f"{folder}nested/{photos[0].name}", photos[0].read_bytes())
                for photo in reversed(photos):
                    zipped.write(photo, folder + photo.name)


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    """Local downloads of the three files and a manifest with their file:// URLs."""
    origin = tmp_path / "origin"
    origin.mkdir()
    archive = origin / ARCHIVE
    build_archive(archive)
    weights = {}
    for name, source in zip(WEIGHTS_FILES, (WEIGHTS, SMALL_WEIGHTS), strict=True):
        weights[name] = origin / name
        shutil.copyfile(source, weights[name])
    manifest = tmp_path / "downloads.json"
    manifest.write_text(json.dumps({
        path.name: {"url": path.as_uri(), "size": path.stat().st_size, "sha256": sha256(path)}
        for path in (archive, *weights.values())}))
    (tmp_path / "empty-shared").mkdir()
    return Sources(archive, weights, manifest, tmp_path / "empty-shared", tmp_path / "cache")


def resolve(sources: Sources, **env: str) -> subprocess.CompletedProcess:
    """`python -m tests.downloaded_data` without a shared folder, on the local downloads."""
    return subprocess.run(
        [sys.executable, "-m", "tests.downloaded_data"], capture_output=True, text=True,
        timeout=300, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), SHARED_ENV: str(sources.shared),
             "XDG_CACHE_HOME": str(sources.cache_home), DOWNLOADS_ENV: str(sources.manifest),
             **env})


def one_line_failure(result: subprocess.CompletedProcess) -> str:
    """The failure's message, checked to be a single line with no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith(PROGRESS)]
    assert len(lines) == 1, result.stderr
    return lines[0]


def assert_mini_layout(root: Path) -> None:
    """root's mini set holds exactly the source photos, byte for byte, and their SHA256SUMS."""
    built = root / "data" / "cats_vs_dogs_mini"
    for split, count in SPLITS.items():
        for cls in CLASSES:
            names = sorted(p.name for p in (built / split / cls).iterdir())
            assert len(names) == count, (split, cls, names)
            assert names == sorted(p.name for p in (MINI / split / cls).glob("*.jpg"))
            for name in names:
                assert (built / split / cls / name).read_bytes() == \
                    (MINI / split / cls / name).read_bytes()
    files = sorted(str(p.relative_to(built)) for p in built.rglob("*") if p.is_file())
    assert len(files) == 121 and "SHA256SUMS" in files
    sums = dict(reversed(line.split("  ")) for line in (built / "SHA256SUMS").read_text()
                .splitlines())
    assert sums == {name: sha256(built / name) for name in files if name != "SHA256SUMS"}


def test_downloads_are_verified_and_built_into_the_mini_layout(sources: Sources):
    result = resolve(sources)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sources.root)
    assert result.stderr.count(f"{PROGRESS} downloading file://") == 3
    assert_mini_layout(sources.root)
    for name, source in sources.weights.items():
        assert (sources.root / "weights" / name).read_bytes() == source.read_bytes()
    recorded = json.loads((sources.root.parent / "manifest.json").read_text())
    assert recorded[ARCHIVE]["sha256"] == sha256(sources.archive)
    # Nothing half-written is left behind.
    assert not list(sources.root.parent.rglob(".*.part-*"))


def test_a_second_run_reuses_the_cache_without_the_downloads(sources: Sources):
    assert resolve(sources).returncode == 0
    shutil.rmtree(sources.archive.parent)
    again = resolve(sources)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(sources.root)
    assert again.stderr == ""
    assert_mini_layout(sources.root)


def test_the_archive_sha256_is_recorded_at_the_first_download_and_checked_after(
        sources: Sources):
    entries = sources.entries()
    del entries[ARCHIVE]["sha256"]
    sources.write_entries(entries)
    assert resolve(sources).returncode == 0
    (sources.root / "data" / "cats_vs_dogs_mini.complete").unlink()
    cached = sources.root.parent / "downloads" / ARCHIVE
    # Same size, other content: the cached copy is dropped, and the download does not match
    # the recorded sha256 either.
    for path in (cached, sources.archive):
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
    line = one_line_failure(resolve(sources))
    assert f"sha256 mismatch: {ARCHIVE}" in line
    recorded = json.loads((sources.root.parent / "manifest.json").read_text())[ARCHIVE]["sha256"]
    assert f"has {sha256(sources.archive)}, expected {recorded}" in line
    assert not cached.exists()


@pytest.mark.parametrize("field", ["sha256", "size"])
@pytest.mark.parametrize("name", [ARCHIVE, WEIGHTS_FILES[0]])
def test_a_download_not_as_expected_is_one_line_naming_it(sources: Sources, name, field):
    entries = sources.entries()
    right = entries[name][field]
    wrong = "0" * 64 if field == "sha256" else right - 1
    entries[name][field] = wrong
    sources.write_entries(entries)
    line = one_line_failure(resolve(sources))
    assert f"{field} mismatch: {name} from {entries[name]['url']}" in line
    if field == "sha256":
        assert f"has {right}, expected {wrong}" in line
    else:
        assert f"is {right:,} bytes, expected {wrong:,}" in line
    assert SHARED_ENV in line
    # A download that does not check out is not kept, under any name.
    kept = [p.name for p in sources.root.parent.rglob("*") if p.is_file()]
    assert not [k for k in kept if k == name or ".part-" in k], kept


def test_unreachable_downloads_without_a_shared_folder_say_what_to_do(sources: Sources):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/{WEIGHTS_FILES[0]}"
    entries = sources.entries()
    entries[WEIGHTS_FILES[0]]["url"] = url
    sources.write_entries(entries)
    line = one_line_failure(resolve(sources))
    assert f"downloading {url} failed:" in line
    assert f"{SHARED_ENV}=DIR" in line
    missing = [sources.shared / "data" / "cats_vs_dogs_mini",
               *(sources.shared / "weights" / name for name in WEIGHTS_FILES)]
    assert f"Missing: {', '.join(map(str, missing))}." in line


@pytest.mark.parametrize(("keep", "problem"), [
    ({("validation", "dogs"): 0}, "has no photos in cats_and_dogs_filtered/validation/dogs/"),
    ({("train", "cats"): 12}, "has 12 photos in cats_and_dogs_filtered/train/cats/, 40 needed"),
])
def test_an_archive_short_of_photos_is_one_line(sources: Sources, keep, problem):
    build_archive(sources.archive, keep)
    entries = sources.entries()
    entries[ARCHIVE].update(size=sources.archive.stat().st_size, sha256=sha256(sources.archive))
    sources.write_entries(entries)
    line = one_line_failure(resolve(sources))
    assert f"{ARCHIVE} from {sources.archive.as_uri()} {problem}" in line
    assert not (sources.root / "data" / "cats_vs_dogs_mini").exists()


def test_a_partial_build_is_rebuilt_from_the_cached_archive(sources: Sources):
    assert resolve(sources).returncode == 0
    built = sources.root / "data" / "cats_vs_dogs_mini"
    # As a run killed while replacing the mini set leaves it: no marker, some files changed.
    (sources.root / "data" / "cats_vs_dogs_mini.complete").unlink()
    next(built.glob("train/cats/*.jpg")).unlink()
    (built / "train" / "dogs" / "stray.jpg").write_bytes(b"x")
    leftover = sources.root / "data" / ".cats_vs_dogs_mini.part-1"
    (leftover / "train").mkdir(parents=True)
    shutil.rmtree(sources.archive.parent)  # the cached archive is enough
    again = resolve(sources)
    assert again.returncode == 0, again.stderr
    assert_mini_layout(sources.root)
    assert not leftover.exists()


def test_a_complete_shared_folder_is_used_as_it_is(sources: Sources, tmp_path: Path):
    shared = tmp_path / "shared"
    (shared / "data").mkdir(parents=True)
    (shared / "data" / "cats_vs_dogs_mini").symlink_to(MINI)
    (shared / "weights").mkdir()
    for name, source in zip(WEIGHTS_FILES, (WEIGHTS, SMALL_WEIGHTS), strict=True):
        (shared / "weights" / name).symlink_to(source)
    sources.manifest.write_text("not even JSON")
    result = resolve(sources, **{SHARED_ENV: str(shared)})
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == (f"{shared}\n", "")
    assert not sources.cache_home.exists()


@pytest.mark.parametrize(("manifest", "problem"), [
    ("not JSON", "Expecting value"),
    ('{"other.zip": {}}', "unknown file 'other.zip'"),
    (json.dumps({ARCHIVE: {"size": "big"}}), f"{ARCHIVE}: bad or unknown fields ['size']"),
])
def test_a_bad_downloads_manifest_is_one_line(sources: Sources, manifest, problem):
    sources.manifest.write_text(manifest)
    line = one_line_failure(resolve(sources))
    assert f"{DOWNLOADS_ENV}={sources.manifest}: {problem}" in line


def test_the_cache_is_under_xdg_cache_home_else_home(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert downloaded_data.cache_dir() == tmp_path / "xdg" / "tfx-image-transfer" / "test-data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert downloaded_data.cache_dir() == (tmp_path / "home" / ".cache" / "tfx-image-transfer"
                                           / "test-data")


def test_the_weights_come_from_where_keras_downloads_them():
    spec = importlib.util.find_spec("keras")  # finds the package without importing it
    assert spec and spec.origin
    source = Path(spec.origin).parent / "src" / "applications" / "mobilenet_v2.py"
    assignments = {target.id: node.value for node in ast.parse(source.read_text()).body
                   if isinstance(node, ast.Assign) for target in node.targets
                   if isinstance(target, ast.Name)}
    assert ast.literal_eval(assignments["BASE_WEIGHT_PATH"]) == downloaded_data.KERAS_WEIGHTS_URL
    urls = {d.name: d.url for d in downloaded_data.DOWNLOADS}
    assert all(urls[name] == downloaded_data.KERAS_WEIGHTS_URL + name for name in WEIGHTS_FILES)
