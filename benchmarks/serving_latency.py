"""Single-image latency and throughput of the local server over gRPC and REST, against an
in-process call of the same SavedModel signature, measured side by side in one run.

    scripts/in-env python benchmarks/serving_latency.py [--model-base-path DIR]

(scripts/in-env puts the repository on PYTHONPATH and sets TF_USE_LEGACY_KERAS.)

Without --model-base-path it exports a quick model (MobileNetV2 alpha 0.5, 160 px, the offline
weights in ../shared) to a temporary directory. The server runs as a subprocess, as it would
be deployed; latency samples of the three paths are interleaved so that noise on a shared
machine hits them alike. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import portpicker
import tensorflow as tf

from contract.interface import IMAGES_INPUT, MODEL_NAME, SERVING_SIGNATURE
from serving.client import GrpcClient, RestClient

REPO = Path(__file__).resolve().parents[1]

SHARED = Path(os.environ.get("TFX_IMAGE_TRANSFER_SHARED", REPO.parent / "shared"))
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
PHOTO = SHARED / "data" / "cats_vs_dogs_mini" / "validation" / "cats" / "cat.119.jpg"
BOUNDS = {"gRPC": 1.3, "REST": 1.6}  # the most p50 may be, as a multiple of the in-process p50


def export_quick_model(base_path: Path, image_size: int = 160) -> None:
    """An alpha 0.5 MobileNetV2 classifier (untrained head) of image_size px as version 1."""
    from pipeline.config import PipelineConfig
    from trainer.export import export_model
    from trainer.model import build_model

    cfg = PipelineConfig(image_size=image_size, alpha=0.5,
                         base_weights=str(WEIGHTS)).training_config()
    export_model(build_model(2, cfg), ["cats", "dogs"], cfg.image_size, str(base_path / "1"))


def test_image() -> bytes:
    """A real photo when ../shared is there, else a 500x375 JPEG of noise."""
    if PHOTO.exists():
        return PHOTO.read_bytes()
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def start_server(base_path: Path, log_path: Path, *flags: str, repo: Path = REPO
                 ) -> tuple[subprocess.Popen, str, str]:
    """The server command of the checkout at repo on base_path with flags, as a subprocess;
    returns it, its gRPC address and REST URL once a version is AVAILABLE."""
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--model-base-path", str(base_path),
             "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), *flags],
            cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, stdout=log,
            stderr=subprocess.STDOUT)
    grpc_address, rest_url = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"
    deadline = time.monotonic() + 120
    with RestClient(rest_url, model_name=base_path.name, timeout=2) as client:
        while True:
            try:
                if any(s.state == "AVAILABLE" for s in client.status()):
                    return process, grpc_address, rest_url
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"local server did not start:\n{log_path.read_text()}"
                                       ) from None
            time.sleep(0.2)


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q)) * 1000


def interleaved_latency(calls: dict[str, Callable[[], object]], rounds: int
                        ) -> dict[str, list[float]]:
    """Seconds per call; each round calls every path once, in a rotating order."""
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            started = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - started)
    return samples


def throughput(make_call: Callable[[], Callable[[], object]], concurrency: int,
               seconds: float) -> float:
    """Completed calls per second with `concurrency` threads, each with its own client."""
    calls = [make_call() for _ in range(concurrency)]
    counts = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        start.wait()
        while not stop.is_set():
            calls[i]()
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", type=Path,
                        help="a TF Serving model base path (default: export a quick model)")
    parser.add_argument("--rounds", type=int, default=300, help="latency samples per path")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="duration of each throughput measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base_path = args.model_base_path or Path(tmp) / MODEL_NAME
        if args.model_base_path is None:
            export_quick_model(base_path)
        version_dir = max((p for p in base_path.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name))
        image = test_image()
        signature = tf.saved_model.load(str(version_dir)).signatures[SERVING_SIGNATURE]

        def in_process() -> Callable[[], object]:
            return lambda: {k: v.numpy() for k, v in signature(
                **{IMAGES_INPUT: tf.constant([image])}).items()}

        process, grpc_address, rest_url = start_server(base_path, Path(tmp) / "server.log")
        clients: list = []

        def client_call(cls: type, target: str) -> Callable[[], Callable[[], object]]:
            def make() -> Callable[[], object]:
                client = cls(target, model_name=base_path.name)
                clients.append(client)
                return lambda: client.predict([image])
            return make

        makers = {"in-process": in_process, "gRPC": client_call(GrpcClient, grpc_address),
                  "REST": client_call(RestClient, rest_url)}
        try:
            calls = {name: make() for name, make in makers.items()}
            interleaved_latency(calls, 20)  # warm up every path
            samples = interleaved_latency(calls, args.rounds)
            rates = {(name, c): throughput(make, c, args.seconds)
                     for c in (1, 4, 16) for name, make in makers.items()}
        finally:
            for client in clients:
                client.close()
            process.terminate()
            process.wait(timeout=30)

    base = statistics.median(samples["in-process"])
    print(f"\nModel: {version_dir} ({len(image)} byte JPEG, one image per request), "
          f"{args.rounds} interleaved calls per path, {os.cpu_count()} CPUs.\n")
    print("| path | p50 ms | p99 ms | p50 vs in-process | bound |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, values in samples.items():
        ratio = statistics.median(values) / base
        bound = f"<= {BOUNDS[name]}x ({'met' if ratio <= BOUNDS[name] else 'MISSED'})" \
            if name in BOUNDS else ""
        print(f"| {name} | {percentile(values, 50):.2f} | {percentile(values, 99):.2f} | "
              f"{ratio:.2f}x | {bound} |")
    print("\n| concurrency | in-process req/s | gRPC req/s | REST req/s |")
    print("| ---: | ---: | ---: | ---: |")
    for c in (1, 4, 16):
        print(f"| {c} | " + " | ".join(f"{rates[(name, c)]:.1f}" for name in makers) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
