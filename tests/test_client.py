"""The gRPC and REST clients (serving/client.py) and their command line (serving/cli.py),
against the local server on one exported version over loopback sockets; the reference is
the SavedModel called in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from serving.client import GrpcClient, RestClient, ServingClient
from serving.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RequestTooLarge,
    Unavailable,
)
from serving.server.app import LocalServer
from tests.conftest import MODEL_NAME, REPO, validation_photos
from tests.serving_helpers import ATOL, MAX_REQUEST_BYTES, free_port


def make_client(kind: str, server: LocalServer, **kwargs: Any) -> ServingClient:
    if kind == "grpc":
        return GrpcClient(server.grpc_address, **kwargs)
    return RestClient(server.rest_url, **kwargs)


def assert_matches(predictions: list, reference: dict[str, np.ndarray], rows: list[int]) -> None:
    assert len(predictions) == len(rows)
    for p, row in zip(predictions, rows, strict=True):
        np.testing.assert_allclose(p.probabilities, reference["probabilities"][row], atol=ATOL)
        assert p.class_name == reference["class_name"][row].decode()
        assert p.class_index == reference["class_index"][row]
        assert p.probability == pytest.approx(max(p.probabilities))


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_predictions_equal_the_in_process_model(kind, server, images, reference):
    with make_client(kind, server) as client:
        assert_matches(client.predict(images), reference, list(range(len(images))))
        single = client.predict([images[3]])
        assert_matches(single, reference, [3])
        assert single[0].model_version == (1 if kind == "grpc" else None)
        assert client.predict([]) == []


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_status_and_metadata(kind, server):
    with make_client(kind, server) as client:
        (status,) = client.status()
        assert (status.version, status.state, status.error_code, status.error_message) == (
            1, "AVAILABLE", "OK", "")
        metadata = client.metadata()
    assert metadata["model_spec"]["name"] == MODEL_NAME
    assert metadata["model_spec"]["version"] == "1"
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert signatures["serving_default"]["inputs"]["images"]["dtype"] == "DT_STRING"
    assert set(signatures["serving_default"]["outputs"]) == {"probabilities", "class_index",
                                                             "class_name"}
    assert "positive_probability" in signatures["from_examples"]["outputs"]


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_client_errors(kind, server, images):
    closed = free_port()
    client_class = GrpcClient if kind == "grpc" else RestClient
    target = f"127.0.0.1:{closed}" if kind == "grpc" else f"http://127.0.0.1:{closed}"
    with client_class(target, timeout=5) as unreachable:
        with pytest.raises(Unavailable, match="cannot reach"):
            unreachable.predict([images[0]])
        # Checked locally: the error names the image, not the missing server.
        with pytest.raises(InvalidArgument, match="image 1 is not a JPEG, PNG, GIF or BMP"):
            unreachable.predict([images[0], b"%PDF-1.4"])
    with make_client(kind, server, max_request_bytes=100_000) as small:
        with pytest.raises(RequestTooLarge, match="100000"):
            small.predict(images[:10])
        assert len(small.predict(images[:1])) == 1
    with make_client(kind, server) as client, pytest.raises(RequestTooLarge):
        client.predict([images[0] + b"\0" * MAX_REQUEST_BYTES])  # refused by the server
    with make_client(kind, server, version=7) as pinned, pytest.raises(NotFound):
        pinned.predict([images[0]])
    with make_client(kind, server, label="canary") as labelled:
        with pytest.raises(InvalidArgument, match="Unrecognized servable version label"):
            labelled.predict([images[0]])
        assert [s.version for s in labelled.status()] == [1]  # status ignores the label
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        target = f"127.0.0.1:{port}" if kind == "grpc" else f"http://127.0.0.1:{port}"
        with client_class(target, timeout=0.5) as slow, pytest.raises(DeadlineExceeded):
            slow.predict([images[0]])
    with pytest.raises(ValueError):
        make_client(kind, server, version=1, label="stable")


# --- the command line ------------------------------------------------------------------------

def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """The tfx-image-transfer-client command, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_predicts_each_image(server, reference):
    paths = [str(p) for p, _ in validation_photos()[:2]]
    text = cli("predict", "--grpc", server.grpc_address, *paths)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    for line, path, name, probs in zip(lines, paths, reference["class_name"][:2],
                                       reference["probabilities"][:2], strict=True):
        shown, label, probability = line.rsplit(" ", 2)
        assert (shown, label) == (f"{path}:", name.decode())
        assert float(probability) == pytest.approx(probs.max(), abs=1e-4)

    machine = cli("predict", "--rest", server.rest_url, "--json", *paths)
    assert machine.returncode == 0, machine.stderr
    answers = json.loads(machine.stdout)
    assert [a["image"] for a in answers] == paths
    np.testing.assert_allclose([a["probabilities"] for a in answers],
                               reference["probabilities"][:2], atol=ATOL)
    assert [a["class_name"] for a in answers] == [n.decode() for n in reference["class_name"][:2]]


def test_cli_status_and_metadata(server):
    status = cli("status", "--rest", server.rest_url)
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == f"{MODEL_NAME} version 1: AVAILABLE"
    metadata = cli("metadata", "--rest", server.rest_url)
    assert metadata.returncode == 0, metadata.stderr
    assert metadata.stdout.splitlines()[0] == f"{MODEL_NAME} version 1"
    assert "  serving_default: images string[None] -> class_index int64[None], " \
           "class_name string[None], probabilities float[None, 2]" in metadata.stdout
    assert "__saved_model_init_op" not in metadata.stdout
    as_json = json.loads(cli("metadata", "--rest", server.rest_url, "--json").stdout)
    assert as_json["model_spec"]["version"] == "1"


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_cli_errors_are_one_line(server, tmp_path):
    photo = str(validation_photos()[0][0])
    closed = free_port()
    assert "cannot reach" in one_line_error(cli("predict", "--grpc", f"127.0.0.1:{closed}",
                                                photo))
    assert "Connection refused" in one_line_error(
        cli("status", "--rest", f"http://127.0.0.1:{closed}"))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    message = one_line_error(cli("predict", "--rest", server.rest_url, photo, str(notes)))
    assert message == f"error: {notes} is not a JPEG, PNG, GIF or BMP image"
    assert "No such file" in one_line_error(cli("predict", "--rest", server.rest_url,
                                                str(tmp_path / "missing.jpg")))
    assert one_line_error(cli("predict", "--rest", server.rest_url, "--model", "nope",
                              photo)) == "error: Servable not found for request: Latest(nope)"
    usage = cli("predict", "--grpc", "x:1", "--rest", "http://x", photo)
    assert usage.returncode == 2 and "not allowed with" in usage.stderr
