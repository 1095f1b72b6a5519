"""Checks a pushed SavedModel with the TF1 session loader of other TensorFlow versions.

TF Serving links one TensorFlow release (tensorflow/serving 2.19.1 builds against TF 2.19.1,
see benchmarks/README.md) while the Trainer exports with the project's TF 2.21. This command
loads a pushed version the way TF Serving does, once per TensorFlow version given, each in a
side venv that holds only that version's `tensorflow-cpu` (or `tensorflow` when no -cpu wheel
exists), and compares the outputs of the versions with each other.

Usage, on the host (not inside scripts/in-env, whose Python 3.13 cannot install TF < 2.20):

    python3 benchmarks/serving_compat.py \\
        --model-dir outputs/serving/image_classifier/<version> \\
        --tf-version 2.19.1 --tf-version 2.21.0 \\
        [--images a.jpg b.jpg ...] [--python /usr/bin/python3.11] [--json report.json]

First, in the project's environment (scripts/in-env, which has tensorflow-serving-api),
serving_compat_warmup.py decodes assets.extra/tf_serving_warmup_requests into arrays with the
local server's own reader. Then, for each version, serving_compat_check.py runs in its venv
(that TensorFlow and numpy, and the project's TF-only session loader, serving/session_bundle.py):
  * imports the `serve` MetaGraph into a TF1 session, restoring the variables through the
    SavedModel's saver and running the init op (tables, assets);
  * replays the warmup requests' tensors;
  * runs `serving_default` on the JPEG bytes of the images and `from_examples` on serialized
    tf.Examples of the same images;
  * runs `saved_model_cli run` from that venv on an .npy of the same JPEG bytes.
It then prints one table row per version: load, warmup replayed, each signature, and the
largest absolute difference of any probability from the first version's; exit 0 only when
every version passed.

Venvs are cached in ~/.cache/tfx-image-transfer/tf-<version>-py<x.y>/ ($XDG_CACHE_HOME or
--cache-dir move it); the first use of a version downloads and installs it (minutes). The
interpreter is the running Python when that TF version supports it, else the newest
supported one found on PATH or under pyenv; --python picks one (one for all versions given).
Default images: two photos per class of ../shared/data/cats_vs_dogs_mini/validation. The
environment passes through to the checks: TF_ENABLE_ONEDNN_OPTS=0 turns TF's oneDNN kernels off
(pip builds use them on x86; TF Serving's default CPU image is not an MKL build).
Exit status: 0 every version passed, 1 one failed, 2 a bad flag or a venv pip cannot build.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TFX_IMAGE_TRANSFER_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "data" / "cats_vs_dogs_mini" / "validation"
PHOTOS_PER_CLASS = 2
CHECK = Path(__file__).resolve().with_name("serving_compat_check.py")  # run in the side venvs
WARMUP = Path(__file__).resolve().with_name("serving_compat_warmup.py")  # run in the project's
IN_ENV = REPO / "scripts" / "in-env"
STAMP = ".installed"  # written into a venv once its install succeeded
INSTALL_TIMEOUT = 1800  # seconds
CHECK_TIMEOUT = 900  # seconds
DEFAULT_TOLERANCE = 1e-4  # max |probability difference| accepted between versions
# Python minor versions (lowest, highest) that each TensorFlow minor has wheels for.
TF_PYTHONS = {
    (2, 12): (8, 11), (2, 13): (8, 11), (2, 14): (9, 11), (2, 15): (9, 11),
    (2, 16): (9, 12), (2, 17): (9, 12), (2, 18): (9, 12), (2, 19): (9, 12),
    (2, 20): (9, 13), (2, 21): (10, 13),
}
_VERSION = re.compile(r"^\d+\.\d+\.\d+((rc|a|b|\.post|\.dev)\d+)?$")


class CompatError(Exception):
    """A usage or setup problem, reported as one line (exit status 2)."""


# ---------------------------------------------------------------------------------------------
# The model's interface, from contract/ (standard library only, see tests/test_layers.py). The
# side venv gets these names in its arguments.
# ---------------------------------------------------------------------------------------------


def _contract() -> dict[str, Any]:
    """The contract's modules' names this file uses, imported with the repository on sys.path."""
    sys.path.insert(0, str(REPO))
    try:
        from contract import artifacts, features, interface
    finally:
        sys.path.remove(str(REPO))
    return {
        "tag": interface.SAVED_MODEL_TAG,
        "images_signature": interface.SERVING_SIGNATURE,
        "examples_signature": interface.EXAMPLES_SIGNATURE,
        "images_input": interface.IMAGES_INPUT,
        "examples_input": interface.EXAMPLES_INPUT,
        "image_feature": features.IMAGE_KEY,
        "probabilities": interface.PROBABILITIES,
        "class_index": interface.CLASS_INDEX,
        "class_name": interface.CLASS_NAME,
        "positive_probability": interface.POSITIVE_PROBABILITY,
        "labels": f"assets/{interface.LABELS_ASSET}",
        "warmup": interface.WARMUP_FILE,
        "saved_model_file": artifacts.SAVED_MODEL_FILE,
        "version_names": artifacts.version_names,
    }


def interface_names() -> dict[str, str]:
    """The signature, input, output, asset and feature names of the exported model.

    Returns:
      A name per role, read from contract/.
    """
    return {k: v for k, v in _contract().items() if isinstance(v, str)}


# ---------------------------------------------------------------------------------------------
# Host side: interpreters, venvs, runs, comparison.
# ---------------------------------------------------------------------------------------------


@dataclass
class Interpreter:
    """A Python interpreter on this machine."""

    path: str
    minor: tuple[int, int]

    @property
    def version(self) -> str:
        """The interpreter's "major.minor"."""
        return f"{self.minor[0]}.{self.minor[1]}"


@dataclass
class VersionResult:
    """What one TensorFlow version made of the model."""

    tf_version: str
    interpreter: Interpreter
    venv_seconds: float = 0.0
    check_seconds: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    max_delta: float | None = None


def probe_interpreter(path: str) -> Interpreter | None:
    """The version of a Python interpreter that can create venvs, if it runs.

    Args:
      path: an executable's path or name.

    Returns:
      The interpreter, or None when it does not run or lacks the venv module.
    """
    try:
        out = subprocess.run(
            [path, "-c", "import sys, venv, ensurepip; print(sys.version_info[0], "
             "sys.version_info[1], sys.executable)"],
            capture_output=True, text=True, timeout=60, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) < 3:
        return None
    return Interpreter(out[2], (int(out[0]), int(out[1])))


def candidate_interpreters() -> Iterator[str]:
    """Python interpreters to consider: the running one, python3.X on PATH, pyenv's versions.

    Yields:
      Executable paths, the running interpreter first.
    """
    yield sys.executable
    for minor in range(15, 7, -1):
        found = shutil.which(f"python3.{minor}")
        if found:
            yield found
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    yield from sorted(str(p) for p in pyenv_root.glob("versions/3.*/bin/python3"))


def choose_interpreter(tf_version: str, explicit: str | None) -> Interpreter:
    """The Python interpreter to build the venv of a TensorFlow version with.

    Args:
      tf_version: the TensorFlow version, e.g. "2.19.1".
      explicit: the --python flag, if given.

    Returns:
      The interpreter: the explicit one; else the running one when the version supports it;
      else the newest supported one found.

    Raises:
      CompatError: the explicit interpreter does not run, or no supported one was found.
    """
    if explicit:
        interpreter = probe_interpreter(explicit)
        if interpreter is None:
            raise CompatError(f"--python {explicit} does not run, or lacks the venv module")
        return interpreter
    supported = TF_PYTHONS.get(_minor(tf_version))
    seen: dict[tuple[int, int], Interpreter] = {}
    for path in candidate_interpreters():
        interpreter = probe_interpreter(path)
        if interpreter and interpreter.minor not in seen:
            seen[interpreter.minor] = interpreter
    running = (sys.version_info[0], sys.version_info[1])
    if supported is None:  # a version this table does not know: try the running Python
        return seen.get(running) or Interpreter(sys.executable, running)
    fits = [i for minor, i in seen.items()
            if minor[0] == 3 and supported[0] <= minor[1] <= supported[1]]
    if not fits:
        raise CompatError(
            f"TensorFlow {tf_version} needs Python 3.{supported[0]} to 3.{supported[1]}; "
            f"found {', '.join(sorted(i.version for i in seen.values())) or 'none'}: "
            "pass --python PATH")
    for interpreter in fits:
        if interpreter.minor == running:
            return interpreter
    return max(fits, key=lambda i: i.minor)


def venv_dir(cache_dir: Path, tf_version: str, interpreter: Interpreter) -> Path:
    """Where the venv of a TensorFlow version and Python version is cached."""
    return cache_dir / f"tf-{tf_version}-py{interpreter.version}"


def ensure_venv(cache_dir: Path, tf_version: str, interpreter: Interpreter) -> Path:
    """Creates (once) a venv holding tensorflow-cpu==tf_version, or tensorflow==tf_version.

    Args:
      cache_dir: the folder of the cached venvs.
      tf_version: the TensorFlow version to install.
      interpreter: the Python to build the venv with.

    Returns:
      The venv's folder.

    Raises:
      CompatError: venv creation failed, or pip can install neither package.
    """
    venv = venv_dir(cache_dir, tf_version, interpreter)
    if (venv / STAMP).exists():
        return venv
    if venv.exists():  # an install that did not finish
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_path = venv.parent / f"{venv.name}.pip.log"
    try:
        subprocess.run([interpreter.path, "-m", "venv", str(venv)], check=True,
                       capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        raise CompatError(f"cannot create a venv with {interpreter.path}: {e}") from None
    python = str(venv / "bin" / "python")
    errors = []
    with open(log_path, "w", encoding="utf-8") as log:
        for package in (f"tensorflow-cpu=={tf_version}", f"tensorflow=={tf_version}"):
            print(f"[serving_compat] installing {package} for Python {interpreter.version} "
                  f"into {venv} (log: {log_path})", file=sys.stderr, flush=True)
            log.write(f"$ pip install {package}\n")
            log.flush()
            done = subprocess.run(
                [python, "-m", "pip", "install", "--disable-pip-version-check",
                 "--progress-bar", "off", package],
                stdout=log, stderr=subprocess.PIPE, text=True, timeout=INSTALL_TIMEOUT)
            log.write(done.stderr)
            if done.returncode == 0:
                (venv / STAMP).write_text(package + "\n", encoding="utf-8")
                return venv
            errors.append(_pip_reason(done.stderr))
            if "No matching distribution" not in done.stderr:
                break  # a real failure, not a missing wheel: tensorflow== would fail alike
    shutil.rmtree(venv, ignore_errors=True)
    supported = TF_PYTHONS.get(_minor(tf_version))
    hint = (f"; TensorFlow {tf_version} has wheels for Python 3.{supported[0]} to "
            f"3.{supported[1]}, pick one with --python" if supported else "")
    raise CompatError(f"pip cannot install TensorFlow {tf_version} for Python "
                      f"{interpreter.version}: {errors[-1]} (log: {log_path}){hint}")


def _minor(tf_version: str) -> tuple[int, int]:
    major, minor = tf_version.split(".")[:2]
    return int(major), int(minor)


def _pip_reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["pip failed"])[-1].removeprefix("ERROR: ")


def decode_warmup(model_dir: Path, work_dir: Path) -> Path | None:
    """Decodes the version's warmup requests into arrays in the project's environment.

    The side venvs hold only TensorFlow; tensorflow-serving-api (PredictionLog) is the
    project's, so serving_compat_warmup.py reads the records there, with the local server's
    reader, and the side venvs replay tensors.

    Args:
      model_dir: the SavedModel version directory.
      work_dir: an empty directory for the manifest and the arrays.

    Returns:
      The manifest's path; None when the version has no warmup file.

    Raises:
      CompatError: the warmup file cannot be decoded (TF Serving would refuse the version).
    """
    if not (model_dir / _contract()["warmup"]).exists():
        return None
    manifest = work_dir / "warmup.json"
    done = subprocess.run([str(IN_ENV), "python", str(WARMUP), str(model_dir), str(manifest)],
                          capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        raise CompatError(f"cannot decode the warmup file of {model_dir}: {lines[-1]}")
    return manifest


def run_check(venv: Path, model_dir: Path, images: Sequence[Path], names: dict[str, str],
              warmup: Path | None, log_path: Path) -> dict[str, Any]:
    """Runs serving_compat_check.py in a venv and returns its JSON report.

    Args:
      venv: the side venv.
      model_dir: the SavedModel version directory.
      images: the encoded images to feed.
      names: the model's interface names (interface_names()).
      warmup: decode_warmup()'s manifest, or None.
      log_path: where the run's standard error goes.

    Returns:
      The report the check printed.

    Raises:
      CompatError: the check crashed or printed no report.
    """
    # -I: no PYTHONPATH (scripts/in-env sets it to the repo); the check puts the repository
    # on sys.path itself and imports only serving.session_bundle and contract/ from it.
    command = [str(venv / "bin" / "python"), "-I", str(CHECK),
               "--model-dir", str(model_dir), "--names", json.dumps(names),
               "--images", *(str(p) for p in images)]
    if warmup is not None:
        command += ["--warmup", str(warmup)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
    env.pop("PYTHONPATH", None)
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                  env=env, timeout=CHECK_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise CompatError(f"the check timed out after {CHECK_TIMEOUT} s "
                              f"(log: {log_path})") from None
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise CompatError(f"the check in {venv} exited {done.returncode} without a report "
                          f"(log: {log_path})") from None


def read_labels(model_dir: Path, names: dict[str, str]) -> list[str]:
    """The class names of the model's labels asset (whole lines), [] without one."""
    path = model_dir / names["labels"]
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def judge(result: VersionResult, labels: list[str], names: dict[str, str], count: int,
          tolerance: float) -> None:
    """Fills result.failures from its report: loads, warmup, signatures, their agreement.

    Args:
      result: one version's result with its report.
      labels: the model's class names.
      names: the model's interface names.
      count: how many images were fed.
      tolerance: the largest |probability difference| accepted between two paths.
    """
    report = result.report
    for step in ("load", "warmup", "serving_default", "from_examples", "saved_model_cli"):
        entry = report.get(step, {})
        if not entry.get("ok"):
            result.failures.append(f"{step}: {entry.get('error') or 'did not run'}")
    reference = report.get("serving_default", {}).get("outputs")
    for step in ("serving_default", "from_examples", "saved_model_cli"):
        entry = report.get(step, {})
        if not entry.get("ok"):
            continue
        problem = _output_problem(entry["outputs"], labels, names, count)
        if problem is None and step != "serving_default" and reference:
            delta = max_abs_difference(entry["outputs"][names["probabilities"]],
                                       reference[names["probabilities"]])
            if delta > tolerance:
                problem = f"probabilities differ from serving_default's by {delta:.3g}"
            elif entry["outputs"][names["class_name"]] != reference[names["class_name"]]:
                problem = "class names differ from serving_default's"
        if problem:
            entry["ok"] = False
            result.failures.append(f"{step}: {problem}")


def _output_problem(outputs: dict[str, Any], labels: list[str], names: dict[str, str],
                    count: int) -> str | None:
    probabilities = outputs.get(names["probabilities"])
    indices = outputs.get(names["class_index"])
    class_names = outputs.get(names["class_name"])
    if probabilities is None or indices is None or class_names is None:
        return f"outputs {sorted(outputs)} lack one of the signature's"
    if len(probabilities) != count or len(indices) != count or len(class_names) != count:
        return f"{len(probabilities)} rows for {count} images"
    for row, index, name in _rows(probabilities, indices, class_names):
        if abs(sum(row) - 1.0) > 1e-4:
            return f"probabilities {row} do not sum to 1"
        if row[index] != max(row):
            return f"class_index {index} is not the argmax of {row}"
        if labels and (index >= len(labels) or labels[index] != name):
            return f"class_name {name!r} is not label {index} of {labels}"
    positive = outputs.get(names["positive_probability"])
    if positive is not None and any(
            abs(p - row[1]) > 1e-6 for p, row in _pairs(positive, probabilities)):
        return "positive_probability is not probabilities[:, 1]"
    return None


def _rows(*columns: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
    for i in range(min(len(c) for c in columns)):
        yield tuple(c[i] for c in columns)


def _pairs(a: Sequence[Any], b: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    for i in range(min(len(a), len(b))):
        yield a[i], b[i]


def max_abs_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """The largest |a[i][j] - b[i][j]| of two equally shaped probability matrices.

    Args:
      a: rows of probabilities.
      b: rows of probabilities, the same shape.

    Returns:
      The difference; infinity when the shapes differ.
    """
    if len(a) != len(b) or any(len(x) != len(y) for x, y in _pairs(a, b)):
        return float("inf")
    return max((abs(x - y) for ra, rb in _pairs(a, b) for x, y in _pairs(ra, rb)), default=0.0)


def compare_versions(results: list[VersionResult], names: dict[str, str],
                     tolerance: float) -> None:
    """Sets each result's max_delta vs the first version, failing those too far off.

    Every probability output (serving_default, from_examples, saved_model_cli) of a version is
    compared with the first version's serving_default; class names must be equal.

    Args:
      results: the versions' results, the reference first.
      names: the model's interface names.
      tolerance: the largest |probability difference| accepted.
    """
    reference = results[0].report.get("serving_default", {})
    if not reference.get("ok"):
        return
    ref_p = reference["outputs"][names["probabilities"]]
    ref_names = reference["outputs"][names["class_name"]]
    for result in results[1:]:
        deltas, differing = [], []
        for step in ("serving_default", "from_examples", "saved_model_cli"):
            entry = result.report.get(step, {})
            if entry.get("outputs"):
                deltas.append(max_abs_difference(entry["outputs"][names["probabilities"]],
                                                 ref_p))
                if entry["outputs"][names["class_name"]] != ref_names:
                    differing.append(step)
        if not deltas:
            continue
        result.max_delta = max(deltas)
        if result.max_delta > tolerance:
            result.failures.append(f"probabilities differ from TF {results[0].tf_version}'s "
                                   f"by up to {result.max_delta:.3g} (tolerance {tolerance})")
        if differing:
            result.failures.append(f"class names differ from TF {results[0].tf_version}'s in "
                                   f"{', '.join(differing)}")


def table(results: list[VersionResult]) -> str:
    """The markdown table of the results, one row per TensorFlow version.

    Args:
      results: the versions' results, the reference first.

    Returns:
      The table's lines.
    """
    def mark(result: VersionResult, step: str) -> str:
        return "ok" if result.report.get(step, {}).get("ok") else "FAIL"

    first = results[0].tf_version
    lines = [f"| TF (Python) | load | warmup replayed | serving_default | from_examples | "
             f"saved_model_cli | max abs Δp vs {first} | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, result in enumerate(results):
        warmup = result.report.get("warmup", {})
        replayed = (f"{warmup.get('replayed', 0)} requests" if warmup.get("ok")
                    else f"FAIL after {warmup.get('replayed', 0)}")
        if not warmup.get("file", True):
            replayed = "no file"
        if i == 0:
            delta = "reference"
        elif result.max_delta is None:
            delta = "n/a"
        else:
            delta = f"{result.max_delta:.2e}"
        lines.append(
            f"| {result.report.get('tensorflow', result.tf_version)} "
            f"(py{result.interpreter.version}) | {mark(result, 'load')} | {replayed} | "
            f"{mark(result, 'serving_default')} | {mark(result, 'from_examples')} | "
            f"{mark(result, 'saved_model_cli')} | {delta} | "
            f"{'pass' if not result.failures else 'FAIL'} |")
    return "\n".join(lines)


def resolve_model_dir(path: Path) -> Path:
    """The SavedModel version directory: path itself, or the highest numbered version in it.

    Args:
      path: a version directory, or a model base path as TF Serving's --model_base_path.

    Returns:
      The absolute version directory.

    Raises:
      CompatError: no SavedModel there.
    """
    if not path.is_dir():
        raise CompatError(f"--model-dir {path} is not a directory")
    contract = _contract()
    saved_model = contract["saved_model_file"]
    if (path / saved_model).exists():
        return path.resolve()
    versions = [name for name in contract["version_names"]([p.name for p in path.iterdir()])
                if (path / name / saved_model).exists()]
    if not versions:
        raise CompatError(f"--model-dir {path} holds no {saved_model}, nor numbered versions "
                          "that do")
    return (path / versions[0]).resolve()


def default_images() -> list[Path]:
    """PHOTOS_PER_CLASS photos of each class of the shared validation photos."""
    photos: list[Path] = []
    for folder in sorted(p for p in PHOTOS.glob("*") if p.is_dir()):
        photos += sorted(p for p in folder.iterdir() if p.is_file())[:PHOTOS_PER_CLASS]
    return photos


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line of the comparison (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="serving_compat.py",
        description="Check a pushed SavedModel with the TF1 session loader of the given "
                    "TensorFlow versions, each in a cached side venv, and compare outputs.")
    parser.add_argument("--model-dir", type=Path, required=True,
                        help="a pushed version directory (or its model base path: the "
                             "highest version is checked)")
    parser.add_argument("--tf-version", action="append", required=True, dest="tf_versions",
                        metavar="X.Y.Z", help="a TensorFlow version; repeat the flag for more, "
                                              "the first is the reference")
    parser.add_argument("--images", nargs="+", type=Path,
                        help=f"encoded images to feed (default: {PHOTOS_PER_CLASS} photos per "
                             f"class of {PHOTOS})")
    parser.add_argument("--python", help="the Python interpreter for the venvs (default: the "
                                         "running one when supported, else the newest "
                                         "supported one found)")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "tfx-image-transfer", help="where the venvs are cached")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="largest |probability difference| accepted (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write every output and verdict here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the comparison.

    Args:
      argv: the command line (default sys.argv[1:]).

    Returns:
      0 when every version passed, 1 when one failed, 2 on a usage or setup error.
    """
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return compare(args)
    except CompatError as e:
        print(f"serving_compat: error: {e}", file=sys.stderr)
        return 2


def compare(args: argparse.Namespace) -> int:
    """The comparison of parsed arguments (see main()).

    Args:
      args: parse_args()'s result.

    Returns:
      0 when every version passed, 1 otherwise.

    Raises:
      CompatError: a bad flag, or a venv that cannot be made.
    """
    for version in args.tf_versions:
        if not _VERSION.match(version):
            raise CompatError(f"--tf-version {version!r} is not a version like 2.19.1")
    if len(set(args.tf_versions)) != len(args.tf_versions):
        raise CompatError("a --tf-version is given twice")
    model_dir = resolve_model_dir(args.model_dir)
    images = args.images or default_images()
    if not images:
        raise CompatError(f"no photos under {PHOTOS}: pass --images")
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise CompatError(f"--images not found: {', '.join(missing)}")
    images = [p.resolve() for p in images]
    names = interface_names()
    labels = read_labels(model_dir, names)
    print(f"[serving_compat] model {model_dir}, {len(images)} images, labels {labels}",
          file=sys.stderr)

    interpreters = [choose_interpreter(v, args.python) for v in args.tf_versions]
    results: list[VersionResult] = []
    logs = Path(tempfile.mkdtemp(prefix="serving_compat-"))
    warmup = decode_warmup(model_dir, logs)
    for i, version in enumerate(args.tf_versions):
        interpreter = interpreters[i]
        result = VersionResult(version, interpreter)
        start = time.monotonic()
        venv = ensure_venv(args.cache_dir, version, interpreter)
        result.venv_seconds = time.monotonic() - start
        print(f"[serving_compat] checking with TF {version} (Python {interpreter.version})",
              file=sys.stderr, flush=True)
        start = time.monotonic()
        log_path = logs / f"check-tf-{version}.log"
        result.report = run_check(venv, model_dir, images, names, warmup, log_path)
        result.check_seconds = time.monotonic() - start
        installed = result.report.get("tensorflow")
        if installed != version:
            result.failures.append(f"the venv holds TensorFlow {installed}, not {version}")
        judge(result, labels, names, len(images), args.tolerance)
        results.append(result)
    compare_versions(results, names, args.tolerance)

    print(table(results))
    print()
    for result in results:
        print(f"TF {result.tf_version}: {result.report.get('git_version', '?')}, venv "
              f"{result.venv_seconds:.0f} s, check {result.check_seconds:.0f} s"
              f"{'' if not result.failures else ' (log: ' + str(logs) + ')'}")
        for failure in result.failures:
            print(f"  FAIL {failure}")
    if args.json:
        args.json.write_text(json.dumps(
            {"model_dir": str(model_dir), "images": [str(p) for p in images],
             "versions": [{"tf_version": r.tf_version, "python": r.interpreter.version,
                           "venv_seconds": r.venv_seconds, "check_seconds": r.check_seconds,
                           "max_delta": r.max_delta, "failures": r.failures,
                           "report": r.report} for r in results]}, indent=1),
            encoding="utf-8")
    return 0 if all(not r.failures for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
