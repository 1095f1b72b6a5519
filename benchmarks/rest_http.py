"""The local server's REST HTTP layer against a baseline checkout's, side by side in one run:
requests/s and p50/p99 latency of REST predict (one JPEG per request) and of GET model status
(the HTTP layer with no model run) at 1, 4 and 8 concurrent keep-alive clients, and each
server's resident memory and threads.

    scripts/in-env python benchmarks/rest_http.py --baseline-checkout DIR \\
        [--model-base-path DIR] [--seconds 5] [--rounds 2] [--json FILE]

Both servers are the server command (`python -m serving.server`) of their checkout, on the same
model, up at the same time; each measurement runs on one while the other idles, in the order
A B B A per round, so that drift on a shared machine hits both alike. Without
--model-base-path the script exports serving_latency.py's quick model (alpha 0.5, 160 px).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_latency import REPO, export_quick_model, start_server, test_image  # noqa: E402

from contract.interface import MODEL_NAME  # noqa: E402

CONCURRENCY = (1, 4, 8)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in MiB and Threads of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) // 1024,
            "peak_rss_mib": int(fields["VmHWM"].split()[0]) // 1024,
            "threads": int(fields["Threads"])}


def load(url: str, body: bytes | None, clients: int, seconds: float) -> list[float]:
    """Seconds per request of `clients` threads, each on its own keep-alive session, for
    `seconds`; POSTs body when given, else GETs. A non-200 answer stops the run."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop = threading.Event()
    failures: list[str] = []

    def worker(i: int) -> None:
        with requests.Session() as session:
            start.wait()
            while not stop.is_set():
                began = time.perf_counter()
                answer = (session.post(url, data=body, timeout=60) if body is not None
                          else session.get(url, timeout=60))
                latencies[i].append(time.perf_counter() - began)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
                    stop.set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{url}: {failures[0]}")
    return [s for per_client in latencies for s in per_client]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-checkout", type=Path, required=True,
                        help="a checkout of the revision to compare with (e.g. git worktree)")
    parser.add_argument("--model-base-path", type=Path,
                        help="a TF Serving model base path (default: export a quick model)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="A B B A rounds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    checkouts = {"baseline": args.baseline_checkout.resolve(), "this checkout": REPO}
    with tempfile.TemporaryDirectory() as tmp:
        base_path = args.model_base_path or Path(tmp) / MODEL_NAME
        if args.model_base_path is None:
            export_quick_model(base_path)
        predict_body = json.dumps({"instances": [
            {"b64": base64.b64encode(test_image()).decode()}]}).encode()
        servers = {name: start_server(base_path, Path(tmp) / f"{i}.log", repo=repo)
                   for i, (name, repo) in enumerate(checkouts.items())}
        try:
            targets = {name: {"predict": (f"{url}/v1/models/{base_path.name}:predict",
                                          predict_body),
                              "status": (f"{url}/v1/models/{base_path.name}", None)}
                       for name, (_, _, url) in servers.items()}
            for paths in targets.values():  # warm up
                for url, body in paths.values():
                    load(url, body, 2, 2.0)
            memory = {name: {"warm": proc_status(process.pid)}
                      for name, (process, _, _) in servers.items()}
            samples: dict[tuple[str, str, int], list[float]] = {}
            elapsed: dict[tuple[str, str, int], float] = {}
            order = list(servers)
            for _ in range(args.rounds):
                for clients in CONCURRENCY:
                    for kind in ("status", "predict"):
                        for name in order + order[::-1]:
                            url, body = targets[name][kind]
                            key = (name, kind, clients)
                            samples.setdefault(key, []).extend(
                                load(url, body, clients, args.seconds / 2))
                            elapsed[key] = elapsed.get(key, 0.0) + args.seconds / 2
            for name, (process, _, _) in servers.items():
                memory[name]["end"] = proc_status(process.pid)
        finally:
            for process, _, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)

    rows = [{"server": name, "request": kind, "clients": clients,
             "requests_per_s": round(len(values) / elapsed[(name, kind, clients)], 1),
             "p50_ms": round(float(np.percentile(values, 50)) * 1000, 2),
             "p99_ms": round(float(np.percentile(values, 99)) * 1000, 2)}
            for (name, kind, clients), values in sorted(samples.items(),
                                                        key=lambda kv: (kv[0][1], kv[0][2]))]
    print(f"\nModel: {base_path.name}, {len(predict_body)} byte predict body; "
          f"{args.rounds} rounds of {args.seconds:g} s per figure.\n")
    print("| request | clients | server | requests/s | p50 ms | p99 ms |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['request']} | {row['clients']} | {row['server']} | "
              f"{row['requests_per_s']} | {row['p50_ms']} | {row['p99_ms']} |")
    print("\n| server | RSS warm MiB | RSS end MiB | peak RSS MiB | threads warm | threads end |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, m in memory.items():
        print(f"| {name} | {m['warm']['rss_mib']} | {m['end']['rss_mib']} | "
              f"{m['end']['peak_rss_mib']} | {m['warm']['threads']} | {m['end']['threads']} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "memory": memory}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
