"""What one large request does to the local server's resident memory, and what large-batch
splitting costs, measured side by side in one run.

    scripts/in-env python benchmarks/server_batch_memory.py [--model-base-path DIR]
        [--rounds 5] [--json report.json]

Without --model-base-path it exports a 224 px, alpha 0.5 MobileNetV2 classifier (untrained
head, the offline weights in ../shared) to a temporary directory. The photos are the 40 of
../shared/data/cats_vs_dogs_mini/validation, repeated as needed. Every server is the command
(`python -m serving.server`) in its own process; RSS and peak RSS (VmRSS, VmHWM) are read from
/proc. Requests go over REST, one at a time.

Three servers run together, requests sent to them in turn (rotating order) so that noise on a
shared machine hits them alike:
  * guard: the command's defaults (no batching; --max-batch-size is the shipped
    serving/batching.config's max_batch_size, 16), sent 16-image requests;
  * whole: --enable-batching with max_batch_size 64, sent 64-image requests, run whole;
  * split: the same with enable_large_batch_splitting and max_execution_batch_size 16, sent
    64-image requests, run 16 images at a time.
Then each is sent a 500-image request (refused by all three), and last a server without a
limit that matters (--max-batch-size 500) is sent one 500-image request, alone.

Prints a Markdown table: RSS warm, after the requests, after the refused request, the peak,
and images per second; then the ratios split / whole.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

import requests

from contract.interface import MODEL_NAME
from serving.server.batching import shipped_max_batch_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_latency import SHARED, export_quick_model, start_server  # noqa: E402

PHOTOS = SHARED / "data" / "cats_vs_dogs_mini" / "validation"
LARGE = 500
WHOLE = "max_batch_size { value: 64 }\n"
SPLIT = WHOLE + ("enable_large_batch_splitting { value: true }\n"
                 "max_execution_batch_size { value: 16 }\n")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return {"rss": int(fields["VmRSS"].split()[0]) / 1024,
            "peak": int(fields["VmHWM"].split()[0]) / 1024}


def body(photos: list[bytes], count: int) -> bytes:
    instances = [{"b64": base64.b64encode(photos[i % len(photos)]).decode()}
                 for i in range(count)]
    return json.dumps({"instances": instances}).encode()


class Served:
    """One server subprocess and what was measured on it."""

    def __init__(self, name: str, base_path: Path, work: Path, *flags: str):
        self.name = name
        self.process, _, rest_url = start_server(base_path, work / f"{name}.log", *flags)
        self.url = f"{rest_url}/v1/models/{base_path.name}:predict"
        self.figures: dict[str, float] = {}
        self.seconds = 0.0
        self.images = 0

    def post(self, data: bytes, status: int = 200) -> float:
        started = time.perf_counter()
        response = requests.post(self.url, data=data, timeout=600)
        if response.status_code != status:
            raise RuntimeError(f"{self.name}: HTTP {response.status_code} {response.text[:300]}")
        return time.perf_counter() - started

    def record(self, key: str) -> None:
        self.figures[key] = round(memory_mb(self.process.pid)["rss"], 1)

    def stop(self) -> None:
        self.figures["peak"] = round(memory_mb(self.process.pid)["peak"], 1)
        self.process.terminate()
        self.process.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", type=Path,
                        help="a TF Serving model base path (default: export a 224 px model)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of 64 images per server (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    photos = [p.read_bytes() for p in sorted(PHOTOS.glob("*/*.jpg"))]
    if not photos:
        print(f"error: no photos under {PHOTOS}", file=sys.stderr)
        return 2
    limit = shipped_max_batch_size()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base_path = args.model_base_path or work / MODEL_NAME
        if args.model_base_path is None:
            export_quick_model(base_path, image_size=224)
        (work / "whole.config").write_text(WHOLE)
        (work / "split.config").write_text(SPLIT)
        servers = [Served("guard", base_path, work),
                   Served("whole", base_path, work, "--enable-batching",
                          "--batching-parameters-file", str(work / "whole.config")),
                   Served("split", base_path, work, "--enable-batching",
                          "--batching-parameters-file", str(work / "split.config"))]
        sizes = {"guard": limit, "whole": 64, "split": 64}
        bodies = {n: body(photos, size) for n, size in sizes.items()}
        for served in servers:  # warm: small requests; then one of its size, not timed
            for _ in range(3):
                served.post(body(photos, 1))
            served.record("warm")
            served.post(bodies[served.name])
        for i in range(args.rounds):
            for served in servers[i % 3:] + servers[:i % 3]:
                for _ in range(64 // sizes[served.name]):
                    served.seconds += served.post(bodies[served.name])
                    served.images += sizes[served.name]
        large = body(photos, LARGE)
        for served in servers:
            served.record("after requests")
            served.post(large, 400)
            served.record(f"after a refused {LARGE}")
            served.stop()
        unbounded = Served("unbounded", base_path, work, "--max-batch-size", str(LARGE))
        for _ in range(3):
            unbounded.post(body(photos, 1))
        unbounded.record("warm")
        unbounded.seconds = unbounded.post(large)
        unbounded.images = LARGE
        unbounded.record(f"after a {LARGE}")
        unbounded.stop()

    rows = []
    for served in [*servers, unbounded]:
        rate = served.images / served.seconds if served.seconds else 0
        rows.append({"server": served.name, **served.figures,
                     "images_per_second": round(rate, 1)})
    keys = ["warm", "after requests", f"after a refused {LARGE}", f"after a {LARGE}", "peak"]
    print("| server | " + " | ".join(f"RSS {k} (MB)" for k in keys) + " | images/s |")
    print("|" + " --- |" * (len(keys) + 2))
    for row in rows:
        print(f"| {row['server']} | " + " | ".join(str(row.get(k, "")) for k in keys)
              + f" | {row['images_per_second']} |")
    whole, split = rows[1], rows[2]
    ratios = {"split/whole images per second": split["images_per_second"]
              / whole["images_per_second"],
              "split/whole RSS growth": (split["after requests"] - split["warm"])
              / max(whole["after requests"] - whole["warm"], 1),
              "split/whole peak": split["peak"] / whole["peak"]}
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratios": ratios}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
