"""The `tfx-image-transfer-client` command: predict, status and metadata over gRPC or REST.

    tfx-image-transfer-client predict [--grpc HOST:8500 | --rest http://HOST:8501] [--model NAME]
        [--version N | --label L] [--timeout S] [--json] IMAGE...
    tfx-image-transfer-client status   [...same target options] [--json]
    tfx-image-transfer-client metadata [...same target options] [--json]

Failures print one line, `error: ...`, to stderr and exit with status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from contract.interface import MODEL_NAME, SERVING_SIGNATURE
from serving.client import GrpcClient, RestClient, ServingClient
from serving.constants import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT_SECONDS, GRPC_PORT
from serving.errors import ServingError


def build_parser() -> argparse.ArgumentParser:
    """The client's command line: the predict, status and metadata subcommands.

    Returns:
      The parser; its Namespace has `command`, the target options and, for predict, `images`.
    """
    common = argparse.ArgumentParser(add_help=False)
    target = common.add_mutually_exclusive_group()
    target.add_argument("--grpc", metavar="HOST:PORT",
                        help=f"TF Serving's gRPC API (the default: localhost:{GRPC_PORT})")
    target.add_argument("--rest", metavar="URL", help="TF Serving's REST API, e.g. "
                        "http://localhost:8501")
    common.add_argument("--model", default=MODEL_NAME, help=f"model name (default {MODEL_NAME})")
    pin = common.add_mutually_exclusive_group()
    pin.add_argument("--version", type=int, help="model version (default: the latest)")
    pin.add_argument("--label", help="model version label, e.g. stable or canary")
    common.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help=f"seconds per call (default {DEFAULT_TIMEOUT_SECONDS:g})")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")

    parser = argparse.ArgumentParser(
        prog="tfx-image-transfer-client",
        description="Query TF Serving (or the local server, tfx-image-transfer-server).")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", parents=[common],
                                  help="classify images, sent in one request")
    predict.add_argument("images", nargs="+", metavar="IMAGE", type=Path,
                         help="JPEG, PNG, GIF or BMP files")
    predict.add_argument("--signature", default=SERVING_SIGNATURE,
                         help=f"signature name (default {SERVING_SIGNATURE})")
    predict.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                         help="refuse to send larger requests")
    commands.add_parser("status", parents=[common], help="versions and their states")
    commands.add_parser("metadata", parents=[common], help="signatures: inputs and outputs")
    return parser


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hides what TensorFlow's C++ runtime logs to fd 2 while it is imported."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def make_client(args: argparse.Namespace) -> ServingClient:
    """The GrpcClient or RestClient the target options name.

    Args:
      args: the parsed flags (build_parser); --rest picks REST, else gRPC at --grpc
        (default localhost:8500).

    Returns:
      The client, not yet connected; close it, or use it in `with`.
    """
    options: dict[str, Any] = {"model_name": args.model, "version": args.version,
                               "label": args.label, "timeout": args.timeout}
    if args.command == "predict":
        options |= {"signature_name": args.signature,
                    "max_request_bytes": args.max_request_bytes}
    if args.rest:
        return RestClient(args.rest, **options)
    with _native_stderr_silenced():
        return GrpcClient(args.grpc or f"localhost:{GRPC_PORT}", **options)


def read_images(paths: Sequence[Path]) -> list[bytes]:
    """The files' bytes (the client checks that each is an image before sending).

    Args:
      paths: the image files.

    Returns:
      Each file's encoded bytes, in order.

    Raises:
      ServingError: a file cannot be read.
    """
    images = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ServingError(f"cannot read {path}: {e.strerror or e}") from None
        images.append(data)
    return images


def run(args: argparse.Namespace) -> str:
    """Runs one command and returns what to print.

    Args:
      args: the parsed flags (build_parser).

    Returns:
      The output: one line per image or version, or the metadata summary; JSON with --json.
    """
    images = read_images(args.images) if args.command == "predict" else []
    with make_client(args) as client:
        if args.command == "predict":
            answers = client.predict(images, names=[str(path) for path in args.images])
            pairs = list(zip(args.images, answers, strict=True))
            if args.json:
                return json.dumps([{"image": str(path), **vars(p)} for path, p in pairs],
                                  indent=1)
            return "\n".join(f"{path}: {p.class_name} {p.probability:.4f}" for path, p in pairs)
        if args.command == "status":
            states = client.status()
            if args.json:
                return json.dumps([vars(s) for s in states], indent=1)
            return "\n".join(
                f"{args.model} version {s.version}: {s.state}"
                + (f" ({s.error_code}: {s.error_message})" if s.error_message else "")
                for s in states)
        metadata = client.metadata()
        return json.dumps(metadata, indent=1) if args.json else describe(metadata)


def describe(metadata: dict[str, Any]) -> str:
    """A readable summary of GetModelMetadata: version, then each signature's inputs/outputs.

    Args:
      metadata: GetModelMetadata as ServingClient.metadata returns it.

    Returns:
      "<model> version <n>", then one line per signature (__saved_model_init_op left out):
      "  <name>: <alias> <dtype>[<dims>], ... -> <outputs>", unknown dims as None.
    """
    spec = metadata["model_spec"]
    lines = [f"{spec['name']} version {spec.get('version', '?')}"]
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    for name, signature in sorted(signatures.items()):
        if name.startswith("__"):  # __saved_model_init_op
            continue

        def tensors(infos: dict[str, Any]) -> str:
            """TensorInfos as "alias dtype[dims]", comma-separated, by alias."""
            return ", ".join(f"{k} {v['dtype'].removeprefix('DT_').lower()}"
                             f"{_shape(v.get('tensor_shape', {}))}"
                             for k, v in sorted(infos.items()))

        lines.append(f"  {name}: {tensors(signature.get('inputs', {}))} -> "
                     f"{tensors(signature.get('outputs', {}))}")
    return "\n".join(lines)


def _shape(shape: dict[str, Any]) -> str:
    if shape.get("unknown_rank"):
        return "[?]"
    dims = [int(d.get("size", -1)) for d in shape.get("dim", [])]
    return "[" + ", ".join("None" if d < 0 else str(d) for d in dims) + "]"


def main(argv: Sequence[str] | None = None) -> int:
    """Parses argv, runs the command and prints its output (an error to stderr).

    Args:
      argv: the arguments after the program name (default: sys.argv[1:]).

    Returns:
      The exit status: 0 on success, 1 on a serving error, 130 on Ctrl-C. Bad usage exits
      with status 2 (argparse).
    """
    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
