"""Decodes a version's warmup file into arrays for benchmarks/serving_compat.py's side venvs.

Runs in the project's environment (scripts/in-env), which has tensorflow-serving-api: the
records are read by the local server's own reader (serving.server.loader.warmup_requests) and
their TensorProtos made arrays by its own converter, so the side venvs, which hold nothing but
another TensorFlow release, replay tensors and need no protobuf decoder of their own.

    scripts/in-env python benchmarks/serving_compat_warmup.py MODEL_DIR MANIFEST

Writes MANIFEST (JSON): {"file": whether the version has a warmup file, "requests":
[{"signature_name", "output_filter", "arrays": "<request-N.npz>"}]}, and one .npz per request
beside it (string tensors as object arrays of bytes). Exit status 0, or 1 with one line on
standard error when the file cannot be read or a record is not a Predict request (TF Serving
would refuse the version).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from contract.interface import WARMUP_FILE
from serving.errors import ServingError
from serving.server.loader import LoadError, arrays_from_protos, warmup_requests


def decode(model_dir: str, manifest_path: str) -> dict:
    """Writes the warmup requests of model_dir as arrays, listed in a manifest.

    Args:
      model_dir: the SavedModel version directory.
      manifest_path: the manifest's path, in an existing directory; the arrays go beside it.

    Returns:
      The manifest.

    Raises:
      LoadError: the warmup file cannot be read or holds a non-Predict record.
      ServingError: a request's TensorProto is malformed.
    """
    path, out_dir = os.path.join(model_dir, WARMUP_FILE), os.path.dirname(manifest_path)
    manifest = {"file": os.path.exists(path), "requests": []}
    for i, request in enumerate(warmup_requests(path), 1):
        name = f"request-{i}.npz"
        np.savez(os.path.join(out_dir, name), **arrays_from_protos(request.inputs))
        manifest["requests"].append({"signature_name": request.model_spec.signature_name,
                                     "output_filter": list(request.output_filter),
                                     "arrays": name})
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """`serving_compat_warmup.py MODEL_DIR MANIFEST`; see the module docstring.

    Args:
      argv: the command line (default sys.argv[1:]).

    Returns:
      The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: serving_compat_warmup.py MODEL_DIR MANIFEST", file=sys.stderr)
        return 2
    try:
        decode(*argv)
    except (LoadError, ServingError) as e:
        print(f"serving_compat_warmup: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
