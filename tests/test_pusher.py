"""The Pusher's version folders appear whole: copied under a hidden name, then renamed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tfx.utils import io_utils

from components import pusher
from components.pusher import STAGING_PREFIX, find_served_copy, publish_version, staging_name


def fake_saved_model(path: Path) -> Path:
    for name, text in {"saved_model.pb": "graph", "variables/variables.index": "index",
                       "variables/variables.data-00000-of-00001": "data",
                       "assets/labels.txt": "cats\ndogs\n"}.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def files(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in path.rglob("*") if p.is_file()}


def test_a_version_is_never_visible_half_written(tmp_path, monkeypatch):
    model = fake_saved_model(tmp_path / "model")
    base = tmp_path / "serving" / "image_classifier"
    seen_during_copy: list[list[str]] = []
    copy_dir = io_utils.copy_dir

    def watching_copy(src: str, dst: str, *args, **kwargs) -> None:
        copy_dir(src, dst, *args, **kwargs)
        seen_during_copy.append(sorted(os.listdir(base)))  # the copy is done, not renamed yet

    monkeypatch.setattr(pusher.io_utils, "copy_dir", watching_copy)
    target = publish_version(str(model), str(base), "1700000000")
    assert target == str(base / "1700000000")
    assert seen_during_copy == [[staging_name("1700000000")]]
    assert staging_name("1700000000") == (
        f"{STAGING_PREFIX}1700000000-{socket.gethostname()}-{os.getpid()}")
    assert sorted(os.listdir(base)) == ["1700000000"]
    assert files(Path(target)) == files(model)
    assert find_served_copy(str(model), str(base)) == target


def test_a_killed_push_leaves_only_a_hidden_folder_that_a_later_push_removes(tmp_path):
    model = fake_saved_model(tmp_path / "model")
    base = tmp_path / "image_classifier"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    left = {
        "old": (f"{STAGING_PREFIX}1700000000-12345", True),  # no host: removed once old
        "killed here": (f"{STAGING_PREFIX}1700000050-{host}-{dead}", True),  # its process died
        "running here": (f"{STAGING_PREFIX}1700000100-{host}-{os.getppid()}", False),
        "elsewhere": (f"{STAGING_PREFIX}1700000150-other-host-{dead}", False),  # maybe running
    }
    for name, _ in left.values():
        (base / name).mkdir(parents=True)
        (base / name / "variables.index").write_text("half")
    old = time.time() - pusher.STALE_STAGING_SECONDS - 60
    os.utime(base / left["old"][0], (old, old))
    publish_version(str(model), str(base), "1700000200")
    assert set(os.listdir(base)) == {"1700000200"} | {
        name for name, removed in left.values() if not removed}


def test_object_stores_get_saved_model_pb_last(tmp_path, monkeypatch):
    version = "1700000000"
    model = fake_saved_model(tmp_path / "model")
    order: list[str] = []
    monkeypatch.setattr(pusher.io_utils, "copy_dir",
                        lambda src, dst, deny_regex_patterns=(): order.append(
                            f"dir without {deny_regex_patterns}"))
    monkeypatch.setattr(pusher.io_utils, "copy_file",
                        lambda src, dst: order.append(os.path.basename(dst)))
    target = publish_version(str(model), "gs://bucket/serving/m", version)
    assert target == f"gs://bucket/serving/m/{version}"
    assert order == ["dir without ['saved_model\\\\.pb']", "saved_model.pb"]
