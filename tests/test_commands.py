"""The commands as a user types them: the installed ones, and `python pipeline/run_local.py`
and `python pipeline/run_kubeflow.py` from the repository root, as TFX's examples are run.

Each runs in a subprocess from the repository root with the user's environment (no
PYTHONPATH), as the README prints it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent
# (the command as the README prints it, the program name its usage line shows)
COMMANDS = [
    ("python pipeline/run_local.py", "tfx-image-transfer"),
    ("python pipeline/run_kubeflow.py", "tfx-image-transfer-kubeflow"),
    ("tfx-image-transfer", "tfx-image-transfer"),
    ("tfx-image-transfer-kubeflow", "tfx-image-transfer-kubeflow"),
    ("tfx-image-transfer-ingest", "tfx-image-transfer-ingest"),
    ("tfx-image-transfer-client", "tfx-image-transfer-client"),
    ("tfx-image-transfer-server", "tfx-image-transfer-server"),
    ("tfx-image-transfer-predict", "tfx-image-transfer-predict"),
]


def run_as_typed(command: str, *args: str) -> subprocess.CompletedProcess:
    """Runs command (words as typed; `python` and the installed commands are the
    environment's) with args, from the repository root."""
    words = command.split()
    program = sys.executable if words[0] == "python" else str(BIN / words[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([program, *words[1:], *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("command", "prog"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_help_of_every_command_as_typed(command, prog):
    result = run_as_typed(command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: {prog} "), result.stdout[:300]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("command", "flags", "problem"), [
    ("python pipeline/run_local.py", [], "does not exist"),
    ("python pipeline/run_kubeflow.py", ["--image", "localhost/tfx-image-transfer:local"],
     "is local"),
], ids=["run_local", "run_kubeflow"])
def test_the_pipeline_files_refuse_bad_input_in_one_line(command, flags, problem, tmp_path):
    result = run_as_typed(command, "--data-dir", str(tmp_path / "missing"), "--output-dir",
                          str(tmp_path / "out"), "--base-weights", "none", *flags)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and problem in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_the_readme_prints_the_commands_the_tests_run():
    readme = (REPO / "README.md").read_text()
    for command, _ in COMMANDS:
        assert command in readme, command
