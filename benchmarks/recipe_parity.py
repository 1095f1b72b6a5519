"""The tutorial recipe in plain Keras against the pipeline's Trainer (tutorial and default recipes),
on the same photos, weights and splits, side by side in one run.

    scripts/in-env python benchmarks/recipe_parity.py \
        --data-dir ../shared/data/cats_vs_dogs \
        --base-weights ../shared/weights/<MobileNetV2 alpha 0.5 no-top>.h5 --alpha 0.5 \
        [--runs plain,tutorial,default] [--seeds 42,43,44] [--baseline-checkout DIR] \
        [--json results.json]

1. The image folder is converted once, as the pipeline's ingestion does (train / eval / test).
2. plain: "Transfer learning and fine-tuning" as written, in plain Keras: image_dataset_from_
   directory at 160 px over a folder tree of the same split (symlinks), 10 epochs at Adam 1e-4
   with the base frozen, then 10 at RMSprop 1e-5 from layer 100; the last epoch is kept. With
   more than two classes, one logit per class (softmax cross-entropy) in place of the one.
3. tutorial / default: the pipeline's Trainer (trainer.task.train_and_export, what the TFX Trainer
   runs) with `--recipe tutorial` and the default recipe, on the converted TFRecords. Its exported
   SavedModel (what the Pusher pushes) is scored through its serving signature. With
   --seeds, each pipeline run is made once per seed.
4. baseline default (--baseline-checkout DIR): the default recipe's Trainer of another checkout
   of this repository (e.g. the main branch's, to compare a change within one run), run by
   that checkout's own code in a child process, on the same conversion.

Prints, per run: validation (eval split) and test accuracy (with its 95% Wilson interval in
the table), the test confusion matrix, each phase's wall time and phase 2's share of the
Trainer's, the Trainer's total wall and CPU time (export included for the pipeline runs), the
kept epochs, and the eval loss of the head against phase 2's best; then the ratios
pipeline-tutorial / plain, default / tutorial, default / plain and default / baseline, in how
many default runs phase 2 was kept, and a markdown table for benchmarks/RESULTS.md. CPU time
(user + system of this process) is the fairer ratio on a shared machine: other work slows one
run's wall clock more than another's, but adds little CPU time to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import contract.keras_env  # noqa: F401  (before TensorFlow loads)
from contract import features
from contract.interface import IMAGES_INPUT, PROBABILITIES, SERVING_SIGNATURE
from contract.knobs import TUTORIAL_RECIPE
from pipeline.config import PipelineConfig
from trainer.data import feature_spec, record_dataset

RUNS = ("plain", "tutorial", "default")
# The tutorial's knob values, which the plain Keras run uses too.
TUTORIAL = PipelineConfig.for_recipe(TUTORIAL_RECIPE)


def converted(data_dir: str, work: Path) -> Path:
    """The image folder as the pipeline's ingestion converts it; returns the conversion dir."""
    from ingestion.convert import convert_image_tree

    result = convert_image_tree(data_dir, str(work / "tfrecords"))
    print(f"ingestion: {result.report.get('written', result.report)} in {result.seconds:.1f}s",
          flush=True)
    return Path(result.output_dir)


def split_records(conversion: Path, split: str) -> list[dict[str, Any]]:
    """Every example of a split: image bytes, label, label name and path."""
    spec = feature_spec(features.IMAGE_KEY, features.LABEL_KEY, features.LABEL_NAME_KEY,
                        features.PATH_KEY)
    out = []
    for serialized in record_dataset(str(conversion / split / "*")):
        parsed = tf.io.parse_single_example(serialized, spec)
        out.append({k: v.numpy() for k, v in parsed.items()})
    return out


def split_tree(data_dir: str, conversion: Path, work: Path) -> Path:
    """A folder tree <split>/<class>/<file> of symlinks to the photos of each converted split,
    so that image_dataset_from_directory reads exactly the pipeline's splits."""
    tree = work / "split_tree"
    for split in features.SPLITS:
        for record in split_records(conversion, split):
            rel = record[features.PATH_KEY].decode()
            link = tree / split / record[features.LABEL_NAME_KEY].decode() / rel.replace("/", "__")
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(os.path.abspath(os.path.join(data_dir, rel)))
    return tree


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    """Rows: true class; columns: predicted class."""
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def run_plain(tree: Path, weights: str, alpha: float, seed: int) -> dict[str, Any]:
    """The tutorial's code, with the tutorial's hyper-parameters, over the split tree."""
    keras.utils.set_random_seed(seed)
    size = (TUTORIAL.image_size, TUTORIAL.image_size)

    def load(split: str, shuffle: bool) -> tf.data.Dataset:
        return keras.utils.image_dataset_from_directory(
            tree / split, shuffle=shuffle, batch_size=TUTORIAL.batch_size, image_size=size,
            seed=seed).prefetch(tf.data.AUTOTUNE)

    train, validation, test = load("train", True), load("eval", False), load("test", False)
    classes = sum(1 for d in (tree / "train").iterdir() if d.is_dir())
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                                keras.layers.RandomRotation(TUTORIAL.rotation)])
    base = keras.applications.MobileNetV2(input_shape=size + (3,), include_top=False,
                                          weights=weights, alpha=alpha)
    base.trainable = False
    inputs = keras.Input(size + (3,))
    x = keras.applications.mobilenet_v2.preprocess_input(augment(inputs))
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(TUTORIAL.dropout)(x)
    # Two classes: the tutorial's one logit. More: one logit per class, the same code otherwise.
    model = keras.Model(inputs, keras.layers.Dense(1 if classes == 2 else classes)(x))

    def compile_with(optimizer: keras.optimizers.Optimizer) -> None:
        if classes == 2:
            loss = keras.losses.BinaryCrossentropy(from_logits=True)
            accuracy = keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy])

    compile_with(keras.optimizers.Adam(TUTORIAL.learning_rate))
    cpu_started = time.process_time()
    started = time.monotonic()
    model.fit(train, epochs=TUTORIAL.epochs, validation_data=validation, verbose=2)
    phase1 = time.monotonic() - started
    base.trainable = True
    for layer in base.layers[:TUTORIAL.fine_tune_at]:
        layer.trainable = False
    compile_with(keras.optimizers.RMSprop(TUTORIAL.learning_rate * TUTORIAL.fine_tune_lr_factor))
    started = time.monotonic()
    model.fit(train, epochs=TUTORIAL.epochs + TUTORIAL.fine_tune_epochs,
              initial_epoch=TUTORIAL.epochs, validation_data=validation, verbose=2)
    phase2 = time.monotonic() - started
    cpu = time.process_time() - cpu_started

    def score(ds: tf.data.Dataset) -> tuple[float, list[list[int]]]:
        labels = np.concatenate([y.numpy() for _, y in ds])
        logits = model.predict(ds, verbose=0)
        predicted = (logits[:, 0] > 0).astype(int) if classes == 2 else logits.argmax(axis=1)
        return float((labels == predicted).mean()), confusion(labels, predicted, classes)

    (eval_acc, eval_cm), (test_acc, test_cm) = score(validation), score(test)
    return {"image_size": TUTORIAL.image_size, "phase1_s": phase1, "phase2_s": phase2,
            "trainer_s": phase1 + phase2, "trainer_cpu_s": cpu, "eval_accuracy": eval_acc,
            "eval_confusion": eval_cm, "test_accuracy": test_acc, "test_confusion": test_cm}


def score_export(export_dir: str, records: list[dict[str, Any]], classes: int
                 ) -> tuple[float, list[list[int]], np.ndarray]:
    """Accuracy, confusion and probabilities of an exported model over a split's photos."""
    serve = tf.saved_model.load(export_dir).signatures[SERVING_SIGNATURE]
    labels = np.array([r[features.LABEL_KEY] for r in records])
    probabilities = np.concatenate([
        serve(**{IMAGES_INPUT: tf.constant([r[features.IMAGE_KEY] for r in records[i:i + 32]])}
              )[PROBABILITIES].numpy() for i in range(0, len(records), 32)])
    predicted = probabilities.argmax(axis=1)
    return (float((labels == predicted).mean()), confusion(labels, predicted, classes),
            probabilities)


def run_pipeline_trainer(recipe: str, conversion: Path, weights: str, alpha: float,
                         work: Path, seed: int | None = None) -> dict[str, Any]:
    """The Trainer's train_and_export with a recipe's knobs (and seed, if given); scored
    through the export."""
    from trainer.task import train_and_export

    seeded = {} if seed is None else {"seed": seed}
    cfg = PipelineConfig.for_recipe(recipe, base_weights=weights, alpha=alpha,
                                    **seeded).training_config()
    classes = (conversion / "labels.txt").read_text().splitlines()
    export_dir, log_dir = work / recipe / "export", work / recipe / "logs"
    cpu_started, started = time.process_time(), time.monotonic()
    history = train_and_export(str(conversion / "train" / "*"), str(conversion / "eval" / "*"),
                               classes, cfg, str(export_dir), str(log_dir))
    total, cpu = time.monotonic() - started, time.process_time() - cpu_started
    result: dict[str, Any] = {"image_size": cfg.image_size, "trainer_s": total,
                              "trainer_cpu_s": cpu,
                              "phase1_s": history["phase1"]["seconds"],
                              "phase1_epochs": len(history["phase1"]["history"]["loss"]),
                              "phase1_kept": history["phase1"]["kept_epoch"]}
    if "feature_seconds" in history["phase1"]:
        result["phase1_features_s"] = history["phase1"]["feature_seconds"]
    phase1 = history["phase1"]
    result["head_eval_loss"] = phase1["history"]["val_loss"][phase1["kept_epoch"] - 1]
    if "phase2" in history:
        phase2 = history["phase2"]
        result.update(phase2_s=phase2["seconds"], phase2_epochs=len(phase2["history"]["loss"]),
                      phase2_kept=phase2["kept_epoch"],
                      phase2_eval_loss=phase2["history"]["val_loss"],
                      phase2_eval_accuracy=phase2["history"]["val_accuracy"],
                      **{k: phase2[k] for k in ("cut", "cache_mb", "spilled") if k in phase2})
    for split in ("eval", "test"):
        records = split_records(conversion, split)
        accuracy, cm, probabilities = score_export(str(export_dir), records, len(classes))
        result[f"{split}_accuracy"], result[f"{split}_confusion"] = accuracy, cm
        if len(classes) == 2:  # mean p(second class) by true class: where a skew would show
            labels = np.array([r[features.LABEL_KEY] for r in records])
            result[f"{split}_mean_p1_by_class"] = [
                round(float(probabilities[labels == c, 1].mean()), 4) for c in range(2)]
    return result


BASELINE = "baseline default"  # the default recipe's Trainer of another checkout
CHILD_RESULT = "RESULT "


def run_baseline_trainer(checkout: Path, conversion: Path, weights: str, alpha: float,
                         work: Path) -> dict[str, Any]:
    """The default Trainer of another checkout of this repository (e.g. the main branch), in a
    child process that imports that checkout's code; its run_pipeline_trainer measures and
    scores it, on this run's conversion."""
    code = ("import json, sys; from pathlib import Path; "
            "from benchmarks.recipe_parity import run_pipeline_trainer; "
            "r = run_pipeline_trainer('default', Path(sys.argv[1]), sys.argv[2], "
            "float(sys.argv[3]), Path(sys.argv[4])); "
            f"print({CHILD_RESULT!r} + json.dumps(r), flush=True)")
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    child = subprocess.run([sys.executable, "-c", code, str(conversion), weights, str(alpha),
                            str(work)], cwd=checkout, env=env, capture_output=True, text=True)
    lines = [line for line in child.stdout.splitlines() if line.startswith(CHILD_RESULT)]
    if child.returncode != 0 or not lines:
        raise SystemExit(f"error: the baseline Trainer in {checkout} failed "
                         f"({child.returncode}):\n{child.stderr[-2000:]}")
    return {**json.loads(lines[-1][len(CHILD_RESULT):]), "commit": head_commit(checkout)}


def head_commit(checkout: Path) -> str:
    """The checkout's HEAD commit, read from its .git folder (the environment has no git)."""
    git = checkout / ".git"
    head = (git / "HEAD").read_text().strip()
    if not head.startswith("ref: "):
        return head[:7]
    ref = head[len("ref: "):]
    if (git / ref).is_file():
        return (git / ref).read_text().strip()[:7]
    packed = (git / "packed-refs").read_text().splitlines() if (git / "packed-refs").is_file() \
        else []
    return next((line.split()[0][:7] for line in packed if line.endswith(" " + ref)), "unknown")


def table(results: dict[str, dict[str, Any]]) -> str:
    from components.report.intervals import wilson_interval

    rows = ["| run | px | phase 1 s | phase 2 s (share of Trainer) | Trainer s | Trainer CPU s "
            "| kept epoch: phase 1 / phase 2 | eval loss: head / phase 2 best | eval acc "
            "| test acc (95% interval) | test confusion |", "| --- " * 11 + "|"]
    for name, r in results.items():
        phase2 = (f"{r['phase2_s']:.0f} ({r['phase2_s'] / r['trainer_s']:.0%})"
                  if "phase2_s" in r else "-")
        kept = (f"{r['phase1_kept']} / {r['phase2_kept']}" if "phase2_kept" in r
                else str(r.get("phase1_kept", "last")))
        losses = (f"{r['head_eval_loss']:.4f} / {min(r['phase2_eval_loss']):.4f}"
                  if "phase2_eval_loss" in r else "-")
        n = int(np.sum(r["test_confusion"]))
        low, high = wilson_interval(int(np.trace(r["test_confusion"])), n)
        rows.append(f"| {name} | {r['image_size']} | {r['phase1_s']:.0f} | {phase2} | "
                    f"{r['trainer_s']:.0f} | {r['trainer_cpu_s']:.0f} | {kept} | {losses} | "
                    f"{r['eval_accuracy']:.4f} | {r['test_accuracy']:.4f} of {n} "
                    f"({low:.3f}-{high:.3f}) | {r['test_confusion']} |")
    return "\n".join(rows)


def ratios(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    default = next((name for name in results if name.startswith("default")), None)
    for a, b, what in (("tutorial", "plain", "pipeline tutorial / plain Keras"),
                       (default, "tutorial", "default recipe / tutorial recipe"),
                       (default, "plain", "default recipe / plain Keras"),
                       (default, BASELINE, "default recipe / the baseline checkout's")):
        if a in results and b in results:
            ra, rb = results[a], results[b]
            phase2 = (f", phase 2 time x{ra['phase2_s'] / rb['phase2_s']:.2f}"
                      if ra.get("phase2_s") and rb.get("phase2_s") else "")
            lines.append(f"{what} ({a}): Trainer time x{ra['trainer_s'] / rb['trainer_s']:.2f} "
                         f"(CPU x{ra['trainer_cpu_s'] / rb['trainer_cpu_s']:.2f}), "
                         f"phase 1 time x{ra['phase1_s'] / rb['phase1_s']:.2f}{phase2}, test "
                         f"accuracy {ra['test_accuracy'] - rb['test_accuracy']:+.4f}, eval "
                         f"accuracy {ra['eval_accuracy'] - rb['eval_accuracy']:+.4f}")
    runs = [r for name, r in results.items() if name.startswith("default")]
    if runs and all("phase2_kept" in r for r in runs):
        kept = sum(r["phase2_kept"] > 0 for r in runs)
        shares = ", ".join(f"{r['phase2_s'] / r['trainer_s']:.0%}" for r in runs)
        lines.append(f"default recipe: phase 2 kept (a lower eval loss than the head) in {kept} "
                     f"of {len(runs)} runs; phase 2's share of the Trainer's time: {shares}")
    return lines


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a benchmark that converts an image folder and trains on it."""
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--base-weights", required=True, help="a no-top MobileNetV2 .h5")
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--work-dir", help="default: a new temporary folder")
    parser.add_argument("--json", help="also write the results here")


def chosen(parser: argparse.ArgumentParser, text: str, names: Any, flag: str) -> list[str]:
    """The comma-separated names of `text`, each one of `names`, else a usage error."""
    picked = [name for name in text.split(",") if name]
    if not picked or set(picked) - set(names):
        parser.error(f"{flag} takes names from {','.join(names)}")
    return picked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--runs", default=",".join(RUNS),
                        help=f"comma-separated, in this order: {','.join(RUNS)}")
    parser.add_argument("--seeds", help="the pipeline runs' seeds, comma-separated (each pipeline "
                        "run once per seed); default: the config's")
    parser.add_argument("--baseline-checkout",
                        help="another checkout of this repository (e.g. of the main branch): its "
                        "default Trainer runs too, in its own process, after the others")
    args = parser.parse_args(argv)
    runs = chosen(parser, args.runs, RUNS, "--runs")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="recipe-parity-"))
    conversion = converted(args.data_dir, work)
    results: dict[str, dict[str, Any]] = {}
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]
    jobs = [(name, None) for name in runs if name == "plain"]
    jobs += [(name, seed) for name in runs if name != "plain" for seed in seeds]
    if args.baseline_checkout:
        jobs.append((BASELINE, None))
    for name, seed in jobs:
        key = name if seed is None or len(seeds) == 1 else f"{name} seed {seed}"
        print(f"--- {key}", flush=True)
        if name == "plain":
            tree = split_tree(args.data_dir, conversion, work)
            results[key] = run_plain(tree, args.base_weights, args.alpha,
                                     PipelineConfig().seed)
        elif name == BASELINE:
            results[key] = run_baseline_trainer(Path(args.baseline_checkout).resolve(),
                                                conversion, args.base_weights, args.alpha,
                                                work / "baseline")
        else:
            results[key] = run_pipeline_trainer(name, conversion, args.base_weights, args.alpha,
                                                work / f"seed-{seed}", seed)
        print(json.dumps(results[key]), flush=True)
    print(f"\n{date.today()}, {platform.node()}, {os.cpu_count()} cores, alpha {args.alpha}\n")
    print(table(results))
    print("\n".join(["", *ratios(results)]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
