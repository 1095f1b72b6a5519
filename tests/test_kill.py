"""kill -9 during ingestion, during the Trainer and during the Pusher; the reruns finish, reuse
what finished (TFX caching) and leave no partial TFRecord set, model or version visible.

One chain of runs in one output dir (each phase killed once, then one clean rerun) keeps it to
about one pipeline run's cost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.pusher import STAGING_PREFIX
from contract.interface import MODEL_NAME
from ingestion.convert import COMPLETE_MARKER
from tests.conftest import FAST_ARGS, MINI, REPO

pytestmark = pytest.mark.e2e

# Injected with PYTHONPATH into the killed run only: the process group gets SIGKILL at the
# worst moment of a push, when the staged copy is whole but not yet renamed into place.
KILL_BEFORE_RENAME = f'''
import os, signal
_rename = os.rename
def rename(src, dst, *args, **kwargs):
    if os.path.basename(str(src)).startswith({STAGING_PREFIX!r}):
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return _rename(src, dst, *args, **kwargs)
os.rename = rename
'''


class Run:
    """A run_local process in its own process group, its output in files."""

    def __init__(self, out: Path, log: Path, hook_dir: Path | None = None):
        paths = [str(REPO)] + ([str(hook_dir)] if hook_dir else [])
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.run_local", "--data-dir", str(MINI),
             "--output-dir", str(out), *FAST_ARGS],
            cwd=REPO, env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"ended before {what}: {self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} in {timeout}s"
            time.sleep(0.05)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)  # the group: Beam workers included
        assert self.process.wait(60) == -signal.SIGKILL

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def executions_left_running(metadata: Path) -> list[str]:
    """The node ids of executions that ML Metadata still lists as RUNNING."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    node_type = store.get_context_type("node")
    running = []
    for execution in store.get_executions():
        if execution.last_known_state == metadata_store_pb2.Execution.RUNNING:
            running += [c.name.split(".", 1)[-1] for c in
                        store.get_contexts_by_execution(execution.id)
                        if c.type_id == node_type.id]
    return sorted(running)


def test_kill_9_in_each_phase_then_a_rerun_finishes_and_reuses_what_finished(tmp_path):
    out = tmp_path / "run"
    tfrecords, serving = out / "tfrecords", out / "serving" / MODEL_NAME

    # 1. Killed while ingestion writes TFRecords: the set is never marked complete.
    run = Run(out, tmp_path / "1.log")
    run.wait_for(lambda: any(tfrecords.glob("*/*")), "TFRecords being written")
    run.kill()
    (partial,) = tfrecords.iterdir()
    assert not (partial / COMPLETE_MARKER).exists()

    # 2. The rerun converts again (the partial set is removed); killed during the Trainer.
    run = Run(out, tmp_path / "2.log")
    run.wait_for(lambda: "Component Trainer is running" in run.output(), "the Trainer")
    time.sleep(3)  # into the training loop
    run.kill()
    assert "[ingest] converted" in run.output()
    (converted,) = tfrecords.iterdir()
    assert (converted / COMPLETE_MARKER).exists()
    assert not (out / "run_summary.json").exists()

    # 3. The next rerun trains again (no partial model is reused), then dies in the Pusher
    # with the new version staged but not renamed: the serving dir holds no version.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_BEFORE_RENAME)
    run = Run(out, tmp_path / "3.log", hook_dir=hook)
    assert run.process.wait(900) == -signal.SIGKILL, run.output()[-3000:]
    assert "[ingest] reused" in run.output() and "trainer: phase 1" in run.output()
    (staged,) = serving.iterdir()
    assert staged.name.startswith(STAGING_PREFIX) and not staged.name.isdigit()

    # 4. A clean rerun: what finished is reused, and the version appears whole.
    run = Run(out, tmp_path / "4.log")
    assert run.process.wait(900) == 0, run.output()[-3000:]
    summary = json.loads((out / "run_summary.json").read_text())
    statuses = {c["component"]: c["status"] for c in summary["components"]}
    # Only the Pusher runs again, and the report, which reads the Pusher's output.
    assert {k: v for k, v in statuses.items() if v != "CACHED"} == {
        "Pusher": "COMPLETE", "RunReport": "COMPLETE"}
    assert summary["ingestion"]["reused"] is True and summary["blessed"] is True
    (version,) = serving.iterdir()  # the killed push's staging folder is gone
    assert version.name.isdigit() and summary["pushed_to"] == str(version)
    for name in ("saved_model.pb", "variables/variables.index", "assets/labels.txt"):
        assert (version / name).is_file(), name
    # The killed Trainer and Pusher executions stay RUNNING in ML Metadata (see README).
    assert executions_left_running(out / "metadata.sqlite") == ["Pusher", "Trainer"]
