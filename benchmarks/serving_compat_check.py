"""The side-venv half of benchmarks/serving_compat.py: one TensorFlow release's view of a model.

Run by serving_compat.py with a side venv's Python (`-I`), which holds that release's
tensorflow and numpy and nothing else:

    python -I benchmarks/serving_compat_check.py --model-dir DIR --names JSON \\
        --images FILE... [--warmup MANIFEST]

It loads the model through the project's own session loader (serving/session_bundle.py, the
same code as the local server's and the serving check's; TensorFlow and numpy only), replays
the warmup requests that serving_compat_warmup.py decoded into arrays (--warmup), runs
`serving_default` on the images and `from_examples` on tf.Examples of them, and `saved_model_cli
run` of that venv on an .npy of the images; it prints one JSON report on standard output. Keep
it runnable on every Python the venvs use (3.9 and later).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# -I leaves the repository off sys.path; only serving.session_bundle and contract/ (standard
# library) are imported from it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from serving.session_bundle import load_session, run_signature  # noqa: E402


class WarmupError(RuntimeError):
    """A warmup request TF Serving would fail the load on."""

    def __init__(self, message: str, replayed: int):
        super().__init__(message)
        self.replayed = replayed


def main(argv: Sequence[str] | None = None) -> int:
    """Loads the model in a TF1 session and runs every check; prints the report as JSON.

    Args:
      argv: --model-dir DIR --names JSON --images FILE... [--warmup MANIFEST].

    Returns:
      0 (the verdicts are in the report).
    """
    parser = argparse.ArgumentParser(prog="serving_compat_check.py")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--names", required=True, type=json.loads)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--warmup", help="serving_compat_warmup.py's manifest")
    args = parser.parse_args(argv)
    names: dict[str, str] = args.names
    encoded = [Path(p).read_bytes() for p in args.images]
    report: dict[str, Any] = {
        "tensorflow": tf.__version__, "git_version": tf.version.GIT_VERSION,
        "python": ".".join(str(v) for v in sys.version_info[:3]),
    }
    start = time.monotonic()
    try:
        session, meta_graph = load_session(args.model_dir, names["tag"])
    except Exception as e:
        report["load"] = {"ok": False, "error": one_line(e)}
        print(json.dumps(report))
        return 0
    signatures = {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}
    report["load"] = {"ok": True, "seconds": round(time.monotonic() - start, 2),
                      "signatures": sorted(signatures)}
    report["warmup"] = _step(lambda: replay_warmup(session, signatures, args.warmup,
                                                   names["images_signature"]))
    report["serving_default"] = _step(lambda: {"outputs": _run(
        session, signatures, names["images_signature"],
        {names["images_input"]: np.array(encoded, dtype=object)})})
    report["from_examples"] = _step(lambda: {"outputs": _run(
        session, signatures, names["examples_signature"],
        {names["examples_input"]: np.array(serialized_examples(encoded, names["image_feature"]),
                                           dtype=object)})})
    session.close()
    report["saved_model_cli"] = _step(lambda: {"outputs": run_saved_model_cli(
        args.model_dir, names, encoded)})
    print(json.dumps(report))
    return 0


def _run(session: Any, signatures: dict[str, Any], name: str, arrays: dict[str, np.ndarray],
         output_filter: Sequence[str] = ()) -> dict[str, Any]:
    if name not in signatures:
        raise ValueError(f'signature "{name}" not found (the model has {sorted(signatures)})')
    signature = signatures[name]
    if set(arrays) != set(signature.inputs):
        raise ValueError(f"inputs {sorted(arrays)} do not match the signature's "
                         f"{sorted(signature.inputs)}")
    outputs = run_signature(session, signature, arrays,
                            list(output_filter) or sorted(signature.outputs))
    return {alias: to_json(value) for alias, value in outputs.items()}


def _step(run: Any) -> dict[str, Any]:
    start = time.monotonic()
    try:
        entry = run()
        entry["ok"] = True
    except Exception as e:
        entry = {"ok": False, "error": one_line(e)}
        if isinstance(e, WarmupError):
            entry["replayed"] = e.replayed
    entry["seconds"] = round(time.monotonic() - start, 2)
    return entry


def one_line(error: BaseException) -> str:
    """A TF error's message without the graph's lines, on one line (500 characters at most).

    Args:
      error: the exception.

    Returns:
      The line.
    """
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    noise = ("Graph execution error", "Detected at node", "[[", "<stack traces")
    return " ".join(line for line in lines if not line.startswith(noise))[:500]


def to_json(value: Any) -> Any:
    """A numpy output as JSON: floats, ints, and bytes decoded as UTF-8."""
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(
            array).tolist() if array.size else array.tolist()
    return array.tolist()


def serialized_examples(encoded: Sequence[bytes], feature: str) -> list[bytes]:
    """tf.Examples holding each encoded image as the bytes feature `feature`."""
    return [tf.train.Example(features=tf.train.Features(feature={
        feature: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}))
        .SerializeToString() for image in encoded]


def replay_warmup(session: Any, signatures: dict[str, Any], manifest_path: str | None,
                  default_signature: str) -> dict[str, Any]:
    """Replays the decoded warmup requests, as TF Serving does before serving a version.

    Args:
      session: the model's session.
      signatures: the SignatureDefs by name.
      manifest_path: serving_compat_warmup.py's manifest (None: no warmup file).
      default_signature: the signature an empty signature_name means.

    Returns:
      {"file": whether the version has a warmup file, "replayed": how many requests ran}.

    Raises:
      WarmupError: a request fails.
    """
    if manifest_path is None:
        return {"file": False, "replayed": 0}
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    warmup_dir = os.path.dirname(manifest_path)
    replayed = 0
    for request in manifest["requests"]:
        try:
            with np.load(os.path.join(warmup_dir, request["arrays"]),
                         allow_pickle=True) as arrays:  # our own file: object arrays of bytes
                _run(session, signatures, request["signature_name"] or default_signature,
                     dict(arrays), request["output_filter"])
        except Exception as e:
            raise WarmupError(f"warmup request {replayed + 1}: {one_line(e)}", replayed) from e
        replayed += 1
    return {"file": manifest["file"], "replayed": replayed}


def run_saved_model_cli(model_dir: str, names: dict[str, str],
                        encoded: Sequence[bytes]) -> dict[str, Any]:
    """`saved_model_cli run` of the images signature on an .npy of the JPEG bytes.

    Args:
      model_dir: the SavedModel directory.
      names: the model's interface names.
      encoded: the encoded images.

    Returns:
      The outputs it saved with --outdir, by alias, as JSON values.
    """
    cli = Path(sys.executable).parent / "saved_model_cli"
    with tempfile.TemporaryDirectory() as tmp:
        # Fixed-width bytes load without pickle; numpy drops trailing NULs, so those need object.
        array = (np.array(list(encoded)) if not any(b.endswith(b"\0") for b in encoded)
                 else np.array(list(encoded), dtype=object))
        npy, outdir = os.path.join(tmp, "images.npy"), os.path.join(tmp, "out")
        np.save(npy, array)
        done = subprocess.run(
            [str(cli), "run", "--dir", model_dir, "--tag_set", names["tag"],
             "--signature_def", names["images_signature"],
             "--inputs", f"{names['images_input']}={npy}", "--outdir", outdir, "--overwrite"],
            capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = [line.split("[[")[0].strip() for line in done.stderr.splitlines()
                    if line.strip() and not line.lstrip().startswith("[[")][-2:]
            raise RuntimeError(f"saved_model_cli exited {done.returncode}: {' '.join(tail)}")
        return {p.stem: to_json(np.load(p, allow_pickle=True))
                for p in sorted(Path(outdir).glob("*.npy"))}


if __name__ == "__main__":
    sys.exit(main())
