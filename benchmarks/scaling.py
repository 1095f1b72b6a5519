"""How cost grows with the data: ingestion, StatisticsGen, the phase-1 feature pass, one
phase-2 fine-tuning epoch and the Evaluator at several multiples of an image folder, each
step in a fresh process so its peak resident memory is its own.

    scripts/in-env python benchmarks/scaling.py --data-dir ../shared/data/cats_vs_dogs \
        --base-weights ../shared/weights/<MobileNetV2 alpha 0.5 no-top>.h5 --alpha 0.5 \
        [--scales 1,4,16] [--work-dir outputs/scaling] [--json outputs/scaling/scaling.json]

Scale 1 is the folder itself (symlinks); scale N adds N - 1 distinct images per photo: random
crops of 70-95% of its area at a random offset, re-encoded as JPEG q90 (seeded, so a rerun
makes the same files). The generated folders are kept under the work dir and reused. Every
run converts each folder again (the conversion is the measured ingestion step); the later
steps read that conversion:

* ingest: ingestion.convert.convert_image_tree with the pipeline's split settings and Beam
  options, as `make run` calls it;
* statistics: TFX's StatisticsGen executor with the pipeline's StatsOptions (the allowlist
  contract.features.STATISTICS_FEATURES) over the three splits;
* features: the default recipe's phase 1 feature pass (trainer.feature_cache.extract_features
  over train, once per view), writing phase 2's activation cache as the Trainer does (in
  memory within the budget, spilled to a file beyond it);
* epoch: one phase-2 epoch over train images (base unfrozen from fine_tune_at, RMSprop), fed by
  trainer.data.input_fn (decoded images cached within its budget): phase 2 as the tutorial
  recipe runs it (the default recipe's runs on the cached activations);
* trainer: the whole Trainer with the default recipe (trainer.task.train_and_export, export
  included), its activation cache's size and whether it spilled: the Trainer's peak memory;
* evaluator: TFX's Evaluator executor (the pipeline's) with the pipeline's EvalConfig over the
  test split, on an untrained model exported once by trainer.export.export_model (its accuracy
  is irrelevant; its cost is what is measured).

Prints, per step and scale, the wall seconds of the step's work (process start-up and imports
left out), seconds per 1000 images and the process's peak RSS (os.wait4's ru_maxrss); then the
growth: time(largest) / time(smallest) / (largest / smallest), 1.0 being linear.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages
    sys.path.insert(0, str(ROOT))

STEPS = ("ingest", "statistics", "features", "epoch", "trainer", "evaluator")
FOLDERS = ("train", "validation")
CROP_AREA = (0.70, 0.95)
CROP_ASPECT = (0.85, 1.15)  # the crop's aspect ratio relative to the photo's
JPEG_QUALITY = 90
GENERATOR_VERSION = 1  # bump when the crops change: cached folders are then made again
MARKER = ".complete"


# ---------------------------------------------------------------------------------------------
# The scaled image folders


def photos(data_dir: Path) -> list[Path]:
    """The photos of a train/ + validation/ class-folder tree, relative to it, sorted.

    Args:
      data_dir: the folder holding train/<class>/ and validation/<class>/.

    Returns:
      Relative paths of every regular file two levels below train/ and validation/.

    Raises:
      SystemExit: the folder does not have that layout.
    """
    found = []
    for folder in FOLDERS:
        if not (data_dir / folder).is_dir():
            raise SystemExit(f"error: {data_dir} has no {folder}/ folder (expected "
                             f"{'/ + '.join(FOLDERS)}/ with one folder per class)")
        found += [p.relative_to(data_dir) for p in (data_dir / folder).glob("*/*")
                  if p.is_file() and not p.name.startswith(".")]
    if not found:
        raise SystemExit(f"error: no photos under {data_dir}/{{{','.join(FOLDERS)}}}/<class>/")
    return sorted(found)


def source_photo(path: str) -> str:
    """The photo a file of a scaled folder was made from: "train/cats/cat.1.jpg" for itself
    and for "train/cats/cat.1.crop3.jpg".

    Args:
      path: a path relative to the scaled folder.

    Returns:
      The photo's relative path, without its extension.
    """
    if ".crop" in path:
        return path.split(".crop")[0]
    return path.rsplit(".", 1)[0]


def crop(source: Path, target: Path, seed: str) -> None:
    """Writes a random crop of source (CROP_AREA of it, random offset) as JPEG to target.

    Args:
      source: the photo.
      target: the new file (its folder exists).
      seed: seeds the crop's size and offset.
    """
    from PIL import Image

    rng = random.Random(seed)
    with Image.open(source) as image:
        image = image.convert("RGB")
        width, height = image.size
        area = rng.uniform(*CROP_AREA)
        aspect = rng.uniform(*CROP_ASPECT)
        w = min(width, max(1, round(width * (area * aspect) ** 0.5)))
        h = min(height, max(1, round(height * (area / aspect) ** 0.5)))
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        image.crop((left, top, left + w, top + h)).save(target, "JPEG", quality=JPEG_QUALITY)


def _crops_of(data_dir: Path, out: Path, relative: Path, scale: int, seed: int) -> None:
    for k in range(1, scale):
        crop(data_dir / relative, out / relative.parent / f"{relative.stem}.crop{k}.jpg",
             f"{seed}:{relative}:{k}")


def scaled_tree(data_dir: Path, work: Path, scale: int, seed: int, jobs: int) -> Path:
    """The folder at `scale` times the photos: each photo (a symlink) and scale - 1 crops.

    Args:
      data_dir: the photos (train/<class>/, validation/<class>/).
      work: the work dir; the folder is work/images/x<scale>, reused when complete.
      scale: 1 or more.
      seed: seeds the crops.
      jobs: processes making crops.

    Returns:
      The folder.
    """
    out = work / "images" / f"x{scale}"
    marker = out.with_name(f"{out.name}{MARKER}")  # beside the folder: ingestion reads all in it
    key = json.dumps({"source": str(data_dir.resolve()), "scale": scale, "seed": seed,
                      "version": GENERATOR_VERSION}, sort_keys=True)
    if marker.is_file() and marker.read_text() == key:
        return out
    marker.unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    relatives = photos(data_dir)
    for relative in relatives:
        (out / relative.parent).mkdir(parents=True, exist_ok=True)
        (out / relative).symlink_to((data_dir / relative).resolve())
    if scale > 1:
        with ProcessPoolExecutor(jobs) as pool:
            n = len(relatives)
            list(pool.map(_crops_of, [data_dir] * n, [out] * n, relatives, [scale] * n,
                          [seed] * n, chunksize=16))
    marker.write_text(key)
    return out


# ---------------------------------------------------------------------------------------------
# The steps, each run in its own process (`--step NAME`)


def _training_config(args: argparse.Namespace) -> Any:
    from pipeline.config import PipelineConfig

    return PipelineConfig(base_weights=args.base_weights, alpha=args.alpha).training_config()


def _split_files(conversion: str, split: str) -> str:
    return os.path.join(conversion, split, "*")


def _count(conversion: str, split: str) -> int:
    from trainer.data import record_dataset

    return int(record_dataset(_split_files(conversion, split)).reduce(0, lambda n, _: n + 1))


def _examples_artifact(conversion: str, layout: Path) -> Any:
    """An Examples artifact over the conversion, laid out as ImportExampleGen's (Split-<name>)."""
    from tfx.types import artifact_utils, standard_artifacts

    from contract import features

    layout.mkdir(parents=True, exist_ok=True)
    for split in features.SPLITS:
        link = layout / f"Split-{split}"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.join(conversion, split))
    examples = standard_artifacts.Examples()
    examples.uri = str(layout)
    examples.split_names = artifact_utils.encode_split_names(list(features.SPLITS))
    return examples


def _output(kind: Any, uri: Path) -> Any:
    if uri.exists():
        shutil.rmtree(uri)
    uri.mkdir(parents=True)
    artifact = kind()
    artifact.uri = str(uri)
    return artifact


def step_ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Converts the scaled folder into a fresh TFRecord folder (nothing reused).

    Returns:
      seconds, images (files read), the conversion folder, the report's summary line, written
      per split, and the near-duplicate groups.
    """
    from ingestion.beam_options import beam_pipeline_args
    from ingestion.convert import SplitSettings, convert_image_tree, summarize
    from pipeline.config import PipelineConfig

    cfg = PipelineConfig(data_dir=args.images)
    started = time.monotonic()
    result = convert_image_tree(args.images, args.tfrecords, SplitSettings.from_config(cfg),
                                beam_pipeline_args(cfg.beam_workers))
    seconds = time.monotonic() - started
    report = result.report
    near = {k: v for k, v in report["near_duplicates"].items() if k != "list"}
    # A group of one photo and its own crops is expected; one joining different photos is not.
    near["largest"] = max((len(g["members"]) for g in report["near_duplicates"]["list"]),
                          default=0)
    near["across_photos"] = sum(
        len({source_photo(m["path"]) for m in g["members"]}) > 1
        for g in report["near_duplicates"]["list"])
    return {"seconds": seconds, "images": sum(1 for _ in Path(args.images).glob("*/*/*")),
            "reused": result.reused, "conversion": result.output_dir,
            "summary": summarize(report), "near_duplicates": near,
            "skipped": report["skipped"], "skipped_by_reason": report["skipped_by_reason"],
            "written": {s: _count(result.output_dir, s) for s in ("train", "eval", "test")}}


def step_statistics(args: argparse.Namespace) -> dict[str, Any]:
    """TFX's StatisticsGen executor over the three splits, with the pipeline's StatsOptions.

    Returns:
      seconds and images (examples in all splits).
    """
    import tensorflow_data_validation as tfdv
    from tfx.components.statistics_gen.executor import Executor
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as specs

    from contract import features
    from ingestion.beam_options import beam_pipeline_args
    from pipeline.config import PipelineConfig

    work = Path(args.tfrecords).parent
    examples = _examples_artifact(args.conversion, work / "examples")
    statistics = _output(standard_artifacts.ExampleStatistics, work / "statistics")
    options = tfdv.StatsOptions(feature_allowlist=list(features.STATISTICS_FEATURES))
    executor = Executor(BaseBeamExecutor.Context(
        beam_pipeline_args=beam_pipeline_args(PipelineConfig().beam_workers)))
    started = time.monotonic()
    executor.Do({specs.EXAMPLES_KEY: [examples]}, {specs.STATISTICS_KEY: [statistics]},
                {specs.STATS_OPTIONS_JSON_KEY: options.to_json(),
                 specs.EXCLUDE_SPLITS_KEY: json.dumps([])})
    seconds = time.monotonic() - started
    return {"seconds": seconds,
            "images": sum(_count(args.conversion, s) for s in features.SPLITS)}


def step_features(args: argparse.Namespace) -> dict[str, Any]:
    """The default recipe's phase 1 feature pass over train (the frozen base once per view),
    writing phase 2's activation cache as the Trainer's pass does.

    Returns:
      seconds, images (train examples), views, and the activation cache's cut, size (MB, the
      training views' part) and whether it spilled to disk.
    """
    import keras

    import contract.keras_env  # noqa: F401
    from trainer.data import decoded_examples
    from trainer.feature_cache import extract_features, views
    from trainer.fine_tune_cache import ActivationCache
    from trainer.model import build_model

    cfg = _training_config(args)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(2, cfg)
    view_names = views(cfg)
    started = time.monotonic()
    examples = decoded_examples(_split_files(args.conversion, "train"), cfg, cache=False)
    cache = ActivationCache.allocate(model, cfg, len(view_names) * int(examples.cardinality()),
                                     0)
    _, labels = extract_features(model, examples, cfg, view_names, cache.train)
    seconds = time.monotonic() - started
    record = cache.record()
    cache.release()
    return {"seconds": seconds, "images": len(labels) // len(view_names), "views": view_names,
            **record}


def step_trainer(args: argparse.Namespace) -> dict[str, Any]:
    """The whole Trainer (trainer.task.train_and_export) with the default recipe over train
    and eval, export included.

    Returns:
      seconds, images (train examples), each phase's seconds and kept epoch, phase 2's
      epochs and its activation cache (cut, MB, spilled).
    """
    import contract.keras_env  # noqa: F401
    from contract.labels import LABELS_FILE, parse_labels
    from trainer.task import train_and_export

    cfg = _training_config(args)
    classes = parse_labels(Path(args.conversion, LABELS_FILE).read_text())
    out = Path(args.tfrecords).parent / "trainer"  # runs/x<scale>/trainer
    started = time.monotonic()
    history = train_and_export(_split_files(args.conversion, "train"),
                               _split_files(args.conversion, "eval"), classes, cfg,
                               str(out / "export"), str(out / "logs"))
    seconds = time.monotonic() - started
    phase1, phase2 = history["phase1"], history.get("phase2", {})
    return {"seconds": seconds, "images": phase1.get("examples", _count(args.conversion, "train")),
            "phase1_s": phase1["seconds"], "features_s": phase1.get("feature_seconds"),
            "phase1_kept": phase1["kept_epoch"], "phase2_s": phase2.get("seconds"),
            "phase2_epochs": len(phase2.get("history", {}).get("loss", [])),
            "phase2_kept": phase2.get("kept_epoch"),
            **{k: phase2.get(k) for k in ("cut", "cache_mb", "spilled")}}


def step_epoch(args: argparse.Namespace) -> dict[str, Any]:
    """One phase-2 epoch over train, the Trainer's input and optimizer.

    Returns:
      seconds, images (train examples), steps, and whether input_fn cached the decoded images.
    """
    import keras

    import contract.keras_env  # noqa: F401
    from trainer.data import binary_labels, count_records, fits_in_cache, input_fn
    from trainer.model import build_model, compile_model, unfreeze_top

    cfg = _training_config(args)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(2, cfg)
    unfreeze_top(model, cfg.fine_tune_at)
    compile_model(model, keras.optimizers.RMSprop(cfg.learning_rate * cfg.fine_tune_lr_factor))
    files = _split_files(args.conversion, "train")
    started = time.monotonic()
    train = binary_labels(input_fn(files, cfg, training=True))
    fit = model.fit(train, epochs=1, verbose=0)
    seconds = time.monotonic() - started
    images = _count(args.conversion, "train")
    return {"seconds": seconds, "images": images, "steps": -(-images // cfg.batch_size),
            "loss": float(fit.history["loss"][-1]),
            "cached": fits_in_cache(count_records(files), cfg.image_size)}


def step_export(args: argparse.Namespace) -> dict[str, Any]:
    """Exports an untrained model (the default recipe's architecture) for the Evaluator.

    Returns:
      seconds.
    """
    import keras

    import contract.keras_env  # noqa: F401
    from contract.labels import LABELS_FILE, parse_labels
    from trainer.export import export_model
    from trainer.model import build_model

    cfg = _training_config(args)
    classes = parse_labels(Path(args.conversion, LABELS_FILE).read_text())
    keras.utils.set_random_seed(cfg.seed)
    started = time.monotonic()
    export_model(build_model(len(classes), cfg), classes, cfg.image_size,
                 os.path.join(args.model, "Format-Serving"))
    return {"seconds": time.monotonic() - started, "images": 0}


def step_evaluator(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline's Evaluator executor and EvalConfig over the test split, no baseline.

    Returns:
      seconds, images (test examples) and whether the model was blessed (irrelevant here).
    """
    from google.protobuf import json_format
    from tfx import version
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as specs

    from components.served_baseline import ServedBaselineEvaluatorExecutor
    from contract.labels import LABELS_FILE, parse_labels
    from ingestion.beam_options import beam_pipeline_args
    from pipeline.config import PipelineConfig
    from pipeline.definition import eval_config

    cfg = PipelineConfig(base_weights=args.base_weights, alpha=args.alpha)
    classes = parse_labels(Path(args.conversion, LABELS_FILE).read_text())
    work = Path(args.tfrecords).parent
    examples = _examples_artifact(args.conversion, work / "examples")
    model = standard_artifacts.Model()
    model.uri = args.model
    model.set_string_custom_property("tfx_version", version.__version__)
    evaluation = _output(standard_artifacts.ModelEvaluation, work / "evaluation")
    blessing = _output(standard_artifacts.ModelBlessing, work / "blessing")
    executor = ServedBaselineEvaluatorExecutor(BaseBeamExecutor.Context(
        beam_pipeline_args=beam_pipeline_args(cfg.beam_workers)))
    started = time.monotonic()
    executor.Do({specs.EXAMPLES_KEY: [examples], specs.MODEL_KEY: [model]},
                {specs.EVALUATION_KEY: [evaluation], specs.BLESSING_KEY: [blessing]},
                {specs.EVAL_CONFIG_KEY: json_format.MessageToJson(
                    eval_config(cfg, len(classes))),
                 specs.EXAMPLE_SPLITS_KEY: json.dumps(["test"])})
    seconds = time.monotonic() - started
    return {"seconds": seconds, "images": _count(args.conversion, "test"),
            "blessed": (Path(blessing.uri) / "BLESSED").exists()}


STEP_FUNCTIONS = {"ingest": step_ingest, "statistics": step_statistics,
                  "features": step_features, "epoch": step_epoch, "trainer": step_trainer,
                  "export": step_export, "evaluator": step_evaluator}


def run_child(name: str, args: argparse.Namespace, **paths: str) -> dict[str, Any]:
    """Runs one step in a fresh interpreter; its result plus its peak RSS and total wall time.

    Args:
      name: the step.
      args: the parent's arguments (weights and alpha are passed on).
      **paths: images, tfrecords, conversion, model: the step's folders.

    Returns:
      The step's result dict, with "peak_rss_mb" and "process_seconds".

    Raises:
      SystemExit: the step failed (its exit status and the tail of its log).
    """
    result_file = Path(args.work_dir) / "results" / f"{name}.json"
    log_file = Path(args.work_dir) / "logs" / f"{name}-{paths.get('scale', '')}.log"
    for path in (result_file, log_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--step", name,
               "--result", str(result_file), "--base-weights", args.base_weights,
               "--alpha", str(args.alpha)]
    command += [f"--{k}={v}" for k, v in paths.items() if k != "scale"]
    started = time.monotonic()
    with open(log_file, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0 or not result_file.is_file():
        tail = "".join(log_file.read_text(errors="replace").splitlines(True)[-15:])
        raise SystemExit(f"error: step {name} exited with {child.returncode} "
                         f"(log {log_file}):\n{tail}")
    result = json.loads(result_file.read_text())
    # Linux reports ru_maxrss in KiB: the child's, or its largest reaped descendant's.
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    result["process_seconds"] = round(time.monotonic() - started, 1)
    result["seconds"] = round(result["seconds"], 2)
    return result


# ---------------------------------------------------------------------------------------------
# The report


def per_thousand(result: dict[str, Any]) -> float | None:
    """Seconds per 1000 images of a step's result (None when it saw no image)."""
    return 1000 * result["seconds"] / result["images"] if result["images"] else None


def growth(results: dict[int, dict[str, dict[str, Any]]], step: str) -> float | None:
    """time(largest scale) / time(smallest) / (largest / smallest): 1.0 is linear.

    Args:
      results: {scale: {step: result}}.
      step: the step.

    Returns:
      The ratio, or None with fewer than two scales or a zero time.
    """
    scales = sorted(s for s in results if step in results[s])
    if len(scales) < 2 or not results[scales[0]][step]["seconds"]:
        return None
    low, high = scales[0], scales[-1]
    return results[high][step]["seconds"] / results[low][step]["seconds"] / (high / low)


def marginal(results: dict[int, dict[str, dict[str, Any]]], step: str) -> list[float]:
    """Seconds per 1000 added images between consecutive scales, fixed costs left out: a
    linear step keeps this constant as the data grows.

    Args:
      results: {scale: {step: result}}.
      step: the step.

    Returns:
      One rate per pair of consecutive scales (none with fewer than two).
    """
    runs = [results[s][step] for s in sorted(results) if step in results[s]]
    return [1000 * (b["seconds"] - a["seconds"]) / (b["images"] - a["images"])
            for a, b in zip(runs, runs[1:], strict=False) if b["images"] > a["images"]]


def table(results: dict[int, dict[str, dict[str, Any]]], steps: list[str]) -> str:
    """The step x scale table (seconds, s/1000 images, peak RSS) and each step's growth."""
    scales = sorted(results)
    lines = ["| step | scale | images | seconds | s / 1000 images | peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for step in steps:
        for scale in scales:
            r = results[scale].get(step)
            if r is None:
                continue
            rate = per_thousand(r)
            lines.append(f"| {step} | {scale}x | {r['images']} | {r['seconds']:.1f} | "
                         f"{'-' if rate is None else f'{rate:.1f}'} | {r['peak_rss_mb']:.0f} |")
    lines.append("")
    for step in steps:
        g = growth(results, step)
        if g is not None:
            rates = ", ".join(f"{r:.1f}" for r in marginal(results, step))
            lines.append(f"growth {step}: time({scales[-1]}x) / time({scales[0]}x) / "
                         f"{scales[-1] / scales[0]:g} = {g:.2f}; s per 1000 added images "
                         f"between scales: {rates}")
    return "\n".join(lines)


def near_duplicate_line(scale: int, ingest: dict[str, Any]) -> str:
    """What ingestion's near-duplicate grouping made of the folder (it drops nothing)."""
    near = ingest["near_duplicates"]
    written = sum(ingest["written"].values())
    skipped_reasons = f" {ingest['skipped_by_reason']}" if ingest["skipped_by_reason"] else ""
    return (f"{scale}x: {ingest['images']} files, {written} written "
            f"({', '.join(f'{k} {v}' for k, v in ingest['written'].items())}), "
            f"{ingest['skipped']} skipped{skipped_reasons}; "
            f"{near['groups']} near-duplicate groups holding {near['images']} images, the "
            f"largest {near['largest']}, {near['across_photos']} joining different photos "
            f"({near['moved']} moved to their group's split; grouping drops none)")


def parse_scales(text: str) -> list[int]:
    """"1,4,16" -> [1, 4, 16] (sorted, distinct, each >= 1)."""
    try:
        scales = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if not scales or scales[0] < 1:
        raise argparse.ArgumentTypeError(f"scales must be integers >= 1: {text!r}")
    return scales


def parse_steps(text: str) -> list[str]:
    """"ingest,epoch" -> the steps in STEPS order."""
    names = {s.strip() for s in text.split(",") if s.strip()}
    unknown = names - set(STEPS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"steps must be among {', '.join(STEPS)}: {text!r}")
    return [s for s in STEPS if s in names]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every scale: make its folder, then run each step in its own process.

    Returns:
      The JSON document: machine, arguments, per-scale results and growth.
    """
    work = Path(args.work_dir).resolve()
    data_dir = Path(args.data_dir).resolve()
    results: dict[int, dict[str, dict[str, Any]]] = {}
    generated: dict[int, float] = {}
    model_dir = work / "model"
    for scale in args.scales:
        started = time.monotonic()
        images = scaled_tree(data_dir, work, scale, args.seed, args.jobs)
        generated[scale] = round(time.monotonic() - started, 1)
        print(f"[{scale}x] images in {images} ({generated[scale]} s)", flush=True)
        tfrecords = work / "runs" / f"x{scale}" / "tfrecords"
        if "ingest" in args.steps and tfrecords.exists():
            shutil.rmtree(tfrecords)  # a fresh conversion: its cost is what is measured
        results[scale] = {}
        ingest = run_child("ingest", args, images=str(images), tfrecords=str(tfrecords),
                           scale=str(scale))
        if "ingest" in args.steps:
            results[scale]["ingest"] = ingest
        print(f"[{scale}x] ingest {ingest['seconds']:.1f} s, {ingest['peak_rss_mb']:.0f} MB: "
              f"{near_duplicate_line(scale, ingest)}", flush=True)
        paths = {"tfrecords": str(tfrecords), "conversion": ingest["conversion"],
                 "scale": str(scale)}
        if "evaluator" in args.steps and not (model_dir / "Format-Serving").is_dir():
            run_child("export", args, model=str(model_dir), **paths)
        for step in args.steps:
            if step == "ingest":
                continue
            results[scale][step] = run_child(step, args, model=str(model_dir), **paths)
            r = results[scale][step]
            cache = (f", activation cache {r['cache_mb']} MB at {r['cut']}"
                     f"{' (spilled to disk)' if r['spilled'] else ''}" if r.get("cut") else "")
            print(f"[{scale}x] {step} {r['seconds']:.1f} s over {r['images']} images, "
                  f"{r['peak_rss_mb']:.0f} MB{cache}", flush=True)
    print()
    print(table(results, args.steps))
    print()
    for scale in args.scales:
        if "ingest" in results[scale]:
            print(near_duplicate_line(scale, results[scale]["ingest"]))
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        "data_dir": str(data_dir), "scales": args.scales, "alpha": args.alpha,
        "base_weights": args.base_weights, "seed": args.seed,
        "image_folder_seconds": generated,
        "results": {str(s): r for s, r in results.items()},
        "growth": {step: growth(results, step) for step in args.steps},
        "marginal_seconds_per_1000": {step: marginal(results, step) for step in args.steps},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/cats_vs_dogs",
                        help="train/<class>/ + validation/<class>/ photos")
    parser.add_argument("--scales", type=parse_scales, default=[1, 4, 16])
    parser.add_argument("--steps", type=parse_steps, default=list(STEPS),
                        help=f"a comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--base-weights", required=True, help="MobileNetV2 no-top .h5")
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--work-dir", default="outputs/scaling")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--seed", type=int, default=0, help="seeds the crops")
    parser.add_argument("--jobs", type=int, default=1, help="processes making crops")
    # One step in this process (the parent runs these).
    parser.add_argument("--step", choices=sorted(STEP_FUNCTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    for name in ("images", "tfrecords", "conversion", "model"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        result = STEP_FUNCTIONS[args.step](args)
        Path(args.result).write_text(json.dumps(result, default=str))
        return 0
    if not Path(args.base_weights).is_file():
        parser.error(f"--base-weights {args.base_weights}: no such file")
    document = run(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=1, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
