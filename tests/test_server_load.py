"""The local server under load and abuse, marker `load` (`make test` runs it).

16 clients for 60 s send a mix of good requests and every kind of bad one over REST and gRPC to
a server in its own process. Every request must be answered; a good one as the model answers
in-process, a bad one with TF Serving's status code (tensorflow_serving/model_servers/
http_server.cc ToHTTPStatusCode: INVALID_ARGUMENT and FAILED_PRECONDITION 400, NOT_FOUND 404;
bodies over the limit 413 as the tests of test_server_api.py establish). The figures (requests,
answers by kind, p50/p99 latency, the server's RSS before and after) are printed and written to
outputs/reliability/server_load.json for the README. The memory bound is generous on purpose:
it catches a leak, not noise; nothing here asserts a time.

Also: a version copied into the serving dir file by file, slowly, while clients ask for the
latest version, is never what answers them before the copy is whole; and requests at the
command's batch limit, and one far above it, leave the server's memory near its warm size
(figures in outputs/reliability/server_batch_memory.json).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from contract.interface import LABELS_ASSET
from contract.labels import format_labels
from serving.server.app import LocalServer
from serving.server.batching import shipped_max_batch_size
from tests.conftest import MODEL_NAME, REPO
from tests.serving_helpers import ATOL, MAX_REQUEST_BYTES, b64, free_port, grpc_request, wait_for

pytestmark = pytest.mark.load

CLIENTS = 16
SECONDS = float(os.environ.get("SERVER_LOAD_SECONDS", "60"))  # shorter only when iterating
RSS_GROWTH_LIMIT_MB = 150
# What requests at the command's limit (16 images) may add to the test model's (96 px) server:
# measured +26 MB (README, Reliability; a 224 px model: +162 MB, benchmarks/
# server_batch_memory.py). A 500-image request run whole took a 224 px model's server from
# 871 MB to 4.9 GB.
LIMIT_REQUEST_GROWTH_MB = 150
# What refused requests may add: they are parsed (JSON, protobuf) but not run, so it grows
# with --max-request-bytes, not with the images; measured +141 MB after 5 + 5 of 24.6 MB.
REFUSED_REQUEST_GROWTH_MB = 250
LARGE_REQUEST = 500
REFUSED_REQUESTS = 5  # of each protocol: what a refused request leaves does not add up
REPORT = REPO / "outputs" / "reliability" / "server_load.json"
BATCH_REPORT = REPO / "outputs" / "reliability" / "server_batch_memory.json"
PREDICT = f"/v1/models/{MODEL_NAME}:predict"


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Served:
    process: subprocess.Popen
    rest_url: str
    rest_port: int
    grpc_address: str


@pytest.fixture(scope="module")
def served(exported_model) -> Iterator[Served]:
    """The server command (`python -m serving.server`) in its own process, on free ports."""
    yield from serve_command(exported_model.base_path, "--max-request-bytes",
                             str(MAX_REQUEST_BYTES))


@pytest.fixture(scope="module")
def served_as_shipped(exported_model) -> Iterator[Served]:
    """The server command with its defaults but the ports (64 MB requests, --max-batch-size
    from serving/batching.config)."""
    yield from serve_command(exported_model.base_path)


def serve_command(base_path: Path, *flags: str) -> Iterator[Served]:
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--model-base-path", str(base_path),
         "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), *flags],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rest_url = f"http://127.0.0.1:{rest_port}"
    try:
        wait_for(lambda: requests.get(f"{rest_url}/v1/models/{MODEL_NAME}", timeout=5).json()[
            "model_version_status"][0]["state"] == "AVAILABLE", "the server", timeout=180)
        yield Served(process, rest_url, rest_port, f"127.0.0.1:{grpc_port}")
    finally:
        process.terminate()
        process.wait(60)


# --- what clients send, and what each must get back ------------------------------------------

class Client:
    """One client: a keep-alive REST session and a gRPC channel, and the checks of answers."""

    def __init__(self, served: Served, images: list[bytes], reference: dict[str, np.ndarray],
                 seed: int):
        self.served, self.images, self.reference = served, images, reference
        self.rng = random.Random(seed)
        self.session = requests.Session()
        self.channel = grpc.insecure_channel(served.grpc_address, options=[
            ("grpc.max_send_message_length", 2 * MAX_REQUEST_BYTES)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def rows(self) -> list[int]:
        return self.rng.sample(range(len(self.images)), self.rng.randint(1, 3))

    def check_outputs(self, outputs: dict[str, Any], rows: list[int]) -> str | None:
        names = [n.decode() if isinstance(n, bytes) else n for n in outputs["class_name"]]
        if names != [n.decode() for n in self.reference["class_name"][rows]]:
            return f"class names {names}"
        if not np.allclose(np.asarray(outputs["probabilities"]),
                           self.reference["probabilities"][rows], atol=ATOL):
            return "probabilities differ from the in-process model"
        return None

    def rest(self, path: str, body: bytes, status: int, text: str = "") -> str | None:
        response = self.session.post(f"{self.served.rest_url}{path}", data=body, timeout=120)
        if response.status_code != status:
            return f"HTTP {response.status_code} {response.text[:200]}"
        if text and text not in response.json().get("error", ""):
            return f"error {response.text[:200]}"
        return None

    def grpc_error(self, request: Any, code: grpc.StatusCode) -> str | None:
        try:
            self.stub.Predict(request, timeout=120)
        except grpc.RpcError as e:
            return None if e.code() == code else f"{e.code()} {e.details()[:200]}"
        return "answered instead of failing"

    # Good requests
    def good_rest(self) -> str | None:
        rows = self.rows()
        body = json.dumps({"instances": [b64(self.images[i]) for i in rows]}).encode()
        response = self.session.post(f"{self.served.rest_url}{PREDICT}", data=body, timeout=120)
        if response.status_code != 200:
            return f"HTTP {response.status_code} {response.text[:200]}"
        predictions = response.json()["predictions"]
        return self.check_outputs({k: [p[k] for p in predictions] for k in predictions[0]}, rows)

    def good_grpc(self) -> str | None:
        rows = self.rows()
        response = self.stub.Predict(grpc_request([self.images[i] for i in rows]), timeout=120)
        return self.check_outputs({k: tf.make_ndarray(v) for k, v in response.outputs.items()},
                                  rows)

    def slow_half_body(self) -> str | None:
        """Half the body, a pause, then the rest in pieces: answered like any other."""
        rows = self.rows()
        body = json.dumps({"instances": [b64(self.images[i]) for i in rows]}).encode()
        status, answer = raw_post(self.served.rest_port, body, pause=self.rng.uniform(0.5, 2))
        if status != 200:
            return f"HTTP {status} {answer[:200]!r}"
        predictions = json.loads(answer)["predictions"]
        return self.check_outputs({k: [p[k] for p in predictions] for k in predictions[0]}, rows)

    # Bad requests: (kind, check)
    def bad(self) -> dict[str, Callable[[], str | None]]:
        image = self.images[self.rng.randrange(len(self.images))]
        url = f"/v1/models/{MODEL_NAME}"
        instances = json.dumps({"instances": [b64(image)]}).encode()
        return {
            "bad base64": lambda: self.rest(PREDICT, b'{"instances": [{"b64": "not base64!"}]}',
                                            400, "Unable to base64 decode"),
            "not an image (REST)": lambda: self.rest(
                PREDICT, json.dumps({"instances": [b64(b"plain text, not a JPEG")]}).encode(),
                400),
            "not an image (gRPC)": lambda: self.grpc_error(
                grpc_request([image, b"GIF89a but not really"]), grpc.StatusCode.INVALID_ARGUMENT),
            "oversized body (REST)": lambda: self.rest(
                PREDICT, json.dumps({"instances": [b64(image + b"\0" * MAX_REQUEST_BYTES)]}
                                    ).encode(), 413),
            "oversized body (gRPC)": lambda: self.grpc_error(
                grpc_request([image + b"\0" * MAX_REQUEST_BYTES]),
                grpc.StatusCode.RESOURCE_EXHAUSTED),
            "unknown model (REST)": lambda: self.rest("/v1/models/nope:predict", instances, 404,
                                                      "Servable not found"),
            "unknown model (gRPC)": lambda: self.grpc_error(grpc_request([image], name="nope"),
                                                            grpc.StatusCode.NOT_FOUND),
            "unknown version (REST)": lambda: self.rest(f"{url}/versions/7:predict", instances,
                                                        404, "Servable not found"),
            "unknown version (gRPC)": lambda: self.grpc_error(grpc_request([image], version=7),
                                                              grpc.StatusCode.NOT_FOUND),
            "unknown label (REST)": lambda: self.rest(f"{url}/labels/canary:predict", instances,
                                                      400, "Unrecognized servable version label"),
            "unknown label (gRPC)": lambda: self.grpc_error(
                grpc_request([image], label="canary"), grpc.StatusCode.INVALID_ARGUMENT),
            "malformed JSON": lambda: self.rest(PREDICT, b'{"instances": [', 400,
                                                "JSON Parse error"),
            "deeply nested JSON": lambda: self.rest(
                PREDICT, b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400,
                "JSON Parse error"),
            "half a body, then the client gives up": lambda: self.abandoned(instances),
        }

    def abandoned(self, body: bytes) -> str | None:
        status, answer = raw_post(self.served.rest_port, body, give_up=True)
        return None if status == 400 and b"the body ended early" in answer else (
            f"HTTP {status} {answer[:200]!r}")

    def close(self) -> None:
        self.session.close()
        self.channel.close()


def raw_post(port: int, body: bytes, pause: float = 0.0, give_up: bool = False
             ) -> tuple[int, bytes]:
    """POSTs body over a raw socket, half of it first; then, after pause, the rest in four
    pieces, or (give_up) nothing more: the write side is shut. Returns the answer's status and
    body."""
    head = (f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    half = len(body) // 2
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(head + body[:half])
        if give_up:
            s.shutdown(socket.SHUT_WR)
        else:
            time.sleep(pause)
            step = max(1, (len(body) - half) // 4)
            for start in range(half, len(body), step):
                s.sendall(body[start:start + step])
                time.sleep(0.05)
        answer = b""
        while chunk := s.recv(1 << 16):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 1)


def test_sixteen_clients_for_a_minute_of_good_and_bad_requests(served, images, reference):
    # Warm up both paths, then take the baseline memory.
    warm = Client(served, images, reference, seed=0)
    for _ in range(10):
        assert warm.good_rest() is None and warm.good_grpc() is None
    warm.close()
    rss_start = rss_mb(served.process.pid)

    results: list[tuple[str, float, str | None]] = []  # (kind, seconds, problem)
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def client(seed: int) -> None:
        c = Client(served, images, reference, seed)
        good = {"good (REST)": c.good_rest, "good (gRPC)": c.good_grpc,
                "slow client, half a body then the rest": c.slow_half_body}
        try:
            while time.monotonic() < deadline:
                bad = c.bad()
                # About half good (one in 20 of them slow), half bad, the bad kinds alike.
                kinds = [*good, *bad]
                weights = [10, 10, 1] + [21 / len(bad)] * len(bad)
                kind = c.rng.choices(kinds, weights)[0]
                started = time.monotonic()
                try:
                    problem = (good.get(kind) or bad[kind])()
                except Exception as e:  # no answer (a reset, a timeout) is a failure too
                    problem = f"no answer: {type(e).__name__}: {str(e)[:200]}"
                with lock:
                    results.append((kind, time.monotonic() - started, problem))
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(1, CLIENTS + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rss_end = rss_mb(served.process.pid)
    assert served.process.poll() is None  # still up

    by_kind = Counter(kind for kind, _, _ in results)
    problems = Counter(f"{kind}: {problem}" for kind, _, problem in results if problem)
    good_latency = [s for kind, s, _ in results if kind.startswith("good")]
    report = {
        "clients": CLIENTS, "seconds": SECONDS, "requests": len(results),
        "answered_as_expected": len(results) - sum(problems.values()),
        "unexpected": dict(problems), "by_kind": dict(sorted(by_kind.items())),
        "latency_ms": {"all_p50": percentile([s for _, s, _ in results], 50),
                       "all_p99": percentile([s for _, s, _ in results], 99),
                       "good_p50": percentile(good_latency, 50),
                       "good_p99": percentile(good_latency, 99)},
        "server_rss_mb": {"start": round(rss_start, 1), "end": round(rss_end, 1)},
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    print("\n" + json.dumps(report, indent=1))
    assert not problems, problems.most_common(10)
    assert set(by_kind) == {"good (REST)", "good (gRPC)",
                            "slow client, half a body then the rest"} | set(warm.bad())
    assert rss_end - rss_start < RSS_GROWTH_LIMIT_MB, report["server_rss_mb"]


# --- one request at the batch limit, and one far above it --------------------------------------

def test_requests_at_the_batch_limit_and_above_it_leave_memory_near_its_warm_size(
        served_as_shipped, images, reference):
    served, limit = served_as_shipped, shipped_max_batch_size()
    client = Client(served, images, reference, seed=0)
    for _ in range(5):
        assert client.good_rest() is None and client.good_grpc() is None
    rss = {"warm": rss_mb(served.process.pid)}
    rows = list(range(limit))
    at_limit = json.dumps({"instances": [b64(images[i]) for i in rows]}).encode()
    for _ in range(3):
        response = client.session.post(served.rest_url + PREDICT, data=at_limit, timeout=120)
        predictions = response.json()["predictions"]
        assert client.check_outputs({k: [p[k] for p in predictions] for k in predictions[0]},
                                    rows) is None
        outputs = client.stub.Predict(grpc_request([images[i] for i in rows]), timeout=120)
        assert client.check_outputs({k: tf.make_ndarray(v) for k, v in outputs.outputs.items()},
                                    rows) is None
    rss["after requests at the limit"] = rss_mb(served.process.pid)
    large = [images[i % len(images)] for i in range(LARGE_REQUEST)]
    message = (f"Batch size {LARGE_REQUEST} is larger than the local server's --max-batch-size "
               f"{limit} (send fewer images per request)")
    body = json.dumps({"instances": [b64(image) for image in large]}).encode()
    for _ in range(REFUSED_REQUESTS):
        assert client.rest(PREDICT, body, 400, message) is None
    rss[f"after {REFUSED_REQUESTS} refused {LARGE_REQUEST} (REST)"] = rss_mb(served.process.pid)
    with grpc.insecure_channel(served.grpc_address, options=[
            ("grpc.max_send_message_length", -1)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(REFUSED_REQUESTS):
            with pytest.raises(grpc.RpcError) as error:
                stub.Predict(grpc_request(large), timeout=120)
            assert (error.value.code(), error.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT, message)
    rss[f"after {REFUSED_REQUESTS} refused {LARGE_REQUEST} (gRPC)"] = rss_mb(served.process.pid)
    assert client.good_rest() is None  # serves on
    client.close()
    report = {"max_batch_size": limit, "request_mb": round(len(body) / 2**20, 1),
              "server_rss_mb": {k: round(v, 1) for k, v in rss.items()}}
    BATCH_REPORT.parent.mkdir(parents=True, exist_ok=True)
    BATCH_REPORT.write_text(json.dumps(report, indent=1) + "\n")
    print("\n" + json.dumps(report, indent=1))
    figures = list(rss.values())
    assert figures[1] - figures[0] < LIMIT_REQUEST_GROWTH_MB, report
    assert max(figures[2:]) - figures[1] < REFUSED_REQUEST_GROWTH_MB, report


# --- a version copied in without a rename ------------------------------------------------------

def copy_slowly(source: Path, target: Path, pause: float) -> None:
    """Copies a version the way a careless writer does: into its final, numeric name, file by
    file, each in three writes, saved_model.pb first and the variables index last, with a
    pause longer than the server's poll after the variables' data."""
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    files.sort(key=lambda p: (p.name != "saved_model.pb", p.name == "variables.index"))
    for relative in files:
        data = (source / relative).read_bytes()
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        with open(target / relative, "wb") as f:
            for i in range(3):
                f.write(data[i * len(data) // 3:(i + 1) * len(data) // 3])
                f.flush()
                time.sleep(0.05)
        if relative.name.startswith("variables.data"):
            time.sleep(pause)  # a stable folder without the index: its load fails, retried later


def test_a_version_copied_in_place_is_never_served_half_written(exported_model, images,
                                                                reference, tmp_path):
    base = tmp_path / MODEL_NAME
    shutil.copytree(exported_model.base_path, base)
    # Version 2 is version 1 with other class names: its answers show which version answered.
    source = tmp_path / "v2"
    shutil.copytree(exported_model.version_dir, source)
    (source / "assets" / LABELS_ASSET).write_text(format_labels(["kitten", "puppy"]))
    renamed = {b"cats": "kitten", b"dogs": "puppy"}
    answers: list[tuple[float, list[str], np.ndarray]] = []  # (answered at, names, probs)
    ready_during_copy: set[int] = set()
    stop, copying = threading.Event(), threading.Event()

    with LocalServer(str(base), grpc_port=0, rest_port=0, poll_seconds=0.2) as server:
        channel = grpc.insecure_channel(server.grpc_address)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def ask() -> None:
            while not stop.is_set():
                response = stub.Predict(grpc_request(images[:2]), timeout=60)
                names = [n.decode() for n in tf.make_ndarray(response.outputs["class_name"])]
                answers.append((time.monotonic(), names,
                                tf.make_ndarray(response.outputs["probabilities"])))

        def watch() -> None:  # the versions ready to serve while the copy runs
            while copying.is_set():
                ready_during_copy.update(server.store.versions)
                time.sleep(0.01)

        askers = [threading.Thread(target=ask) for _ in range(2)]
        copying.set()
        for t in [*askers, threading.Thread(target=watch)]:
            t.start()
        try:
            copy_slowly(source, base / "2", pause=1.0)
            copied = time.monotonic()
            copying.clear()
            wait_for(lambda: answers and answers[-1][1][0] in renamed.values(),
                     "version 2 to answer", timeout=120)
        finally:
            copying.clear()
            stop.set()
            for t in askers:
                t.join()
            channel.close()

    old_names = [n.decode() for n in reference["class_name"][:2]]
    new_names = [renamed[n] for n in reference["class_name"][:2]]
    assert {tuple(names) for _, names, _ in answers} == {tuple(old_names), tuple(new_names)}
    assert ready_during_copy == {1}  # version 2 was never loaded half-written
    for answered, names, probabilities in answers:
        np.testing.assert_allclose(probabilities, reference["probabilities"][:2], atol=ATOL)
        if names == new_names:
            assert answered > copied, "version 2 answered before its copy was complete"
    assert any(names == old_names for _, names, _ in answers)  # version 1 served meanwhile

