"""Phase-2 (fine-tuning) variants on cached activations, judged on the eval split over seeds.

    scripts/in-env python benchmarks/fine_tune_variants.py \
        --data-dir ../shared/data/cats_vs_dogs \
        --base-weights ../shared/weights/<MobileNetV2 alpha 0.5 no-top>.h5 --alpha 0.5 \
        [--seeds 42,43,44] [--variants default,longer,...] [--json results.json]

1. The image folder is converted as the pipeline's ingestion does (train / eval / test).
2. One pass of the frozen base over train (the photos and their mirrors) and eval writes the
   pooled features and the activations at phase 2's cut (trainer.fine_tune_cache), as the
   Trainer's phase 1 pass does (which writes the mirrors only with --mirror-features).
3. Per seed: a fresh model with that seed, its head trained as phase 1 trains it
   (trainer.feature_cache.fit_head: Adam 1e-3, early stopping, best epoch kept); then each
   variant fine-tunes from those same head weights on the cached activations.

Every variant is judged by the eval split's log loss (binary cross-entropy of the logits),
against the converged head's as epoch 0, as the Trainer's best-epoch selection judges phase 2.
The test split is never read. Prints per seed and variant: the eval loss by epoch, the kept
epoch (0: the head), the kept eval loss and accuracy, seconds per epoch; then per variant
in how many seeds it beat the head, and a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
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
from benchmarks.recipe_parity import add_data_arguments, chosen, converted
from pipeline.config import PipelineConfig
from trainer.config import TrainingConfig
from trainer.data import decoded_examples
from trainer.feature_cache import extract_features, fit_head
from trainer.fine_tune_cache import ActivationCache, activation_batches, top_model
from trainer.model import build_model, fine_tune_cut, unfreeze_top

# name -> what differs from the default phase 2 (RMSprop at learning_rate x fine_tune_lr_factor
# on base and head alike, fine_tune_epochs epochs, from cfg.fine_tune_at, the photos only).
# "epochs" is the most; "patience" stops earlier, on the eval loss.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "longer": {"epochs": 8, "patience": 2},
    "warmup_cosine": {"epochs": 6, "patience": 2, "warmup_epochs": 1},
    "lower_base_rate": {"epochs": 8, "patience": 2, "base_rate_factor": 0.1},
    "label_smoothing": {"epochs": 8, "patience": 2, "label_smoothing": 0.1},
    "fine_tune_at_130": {"epochs": 8, "patience": 2, "fine_tune_at": 130},
    "mirror": {"epochs": 8, "patience": 2, "mirror": True},
}


def cached_split(model: keras.Model, cfg: TrainingConfig, files: str, views: list[str]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pooled features, activations at the cut, float32 targets [N, 1]) of a split's views."""
    examples = decoded_examples(files, cfg, cache=False)
    rows = len(views) * int(examples.cardinality())
    cache = ActivationCache.allocate(model, cfg, rows, 0)
    features, labels = extract_features(model, examples, cfg, views, cache.train)
    return features, np.asarray(cache.train), labels.astype(np.float32)[:, None]


def deeper_activations(model: keras.Model, cfg: TrainingConfig, fine_tune_at: int,
                       activations: np.ndarray) -> np.ndarray:
    """The activations at a deeper cut, computed from the default cut's through the frozen
    layers between them (inference mode, as every base layer runs)."""
    between = keras.Model(fine_tune_cut(model, cfg.fine_tune_at).output,
                          fine_tune_cut(model, fine_tune_at).output)
    run = tf.function(lambda x: between(x, training=False))
    return np.concatenate([run(activations[i:i + 256]).numpy()
                           for i in range(0, len(activations), 256)])


def run_variant(model: keras.Model, cfg: TrainingConfig, spec: dict[str, Any],
                train: tuple[np.ndarray, np.ndarray], evaluation: tuple[np.ndarray, np.ndarray]
                ) -> dict[str, Any]:
    """Fine-tunes from the model's current weights; the eval loss by epoch and the best.

    The eval loss before any step is the head's (epoch 0); an epoch is kept only when its
    eval loss is lower than every earlier one's, the head's included.
    """
    fine_tune_at = spec.get("fine_tune_at", cfg.fine_tune_at)
    epochs = spec.get("epochs", cfg.fine_tune_epochs)
    patience = spec.get("patience", epochs)
    unfreeze_top(model, fine_tune_at)
    top = top_model(model, fine_tune_at)
    head_ids = {id(w) for w in model.get_layer("logits").trainable_weights}
    base_vars = [w for w in top.trainable_weights if id(w) not in head_ids]
    head_vars = [w for w in top.trainable_weights if id(w) in head_ids]
    steps = math.ceil(len(train[1]) / cfg.batch_size)
    rate = cfg.learning_rate * cfg.fine_tune_lr_factor

    def schedule(peak: float) -> Any:
        if not spec.get("warmup_epochs"):
            return peak
        warmup = spec["warmup_epochs"] * steps
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=epochs * steps - warmup, warmup_target=peak, warmup_steps=warmup)

    optimizers = [(keras.optimizers.RMSprop(schedule(rate * spec.get("base_rate_factor", 1.0))),
                   base_vars), (keras.optimizers.RMSprop(schedule(rate)), head_vars)]
    for optimizer, variables in optimizers:
        optimizer.build(variables)
    train_loss = keras.losses.BinaryCrossentropy(from_logits=True,
                                                 label_smoothing=spec.get("label_smoothing", 0))
    eval_loss = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, y: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = train_loss(y, top(x, training=True))
        grads = tape.gradient(loss, base_vars + head_vars)
        optimizers[0][0].apply(grads[:len(base_vars)], base_vars)
        optimizers[1][0].apply(grads[len(base_vars):], head_vars)

    forward = tf.function(lambda x: top(x, training=False), reduce_retracing=True)

    def evaluate() -> tuple[float, float]:
        logits = np.concatenate([forward(x).numpy() for x, _ in
                                 activation_batches(*evaluation, cfg, training=False)])
        y = evaluation[1]
        return (float(eval_loss(y, logits)), float(((logits > 0) == (y > 0.5)).mean()))

    train_ds = activation_batches(*train, cfg, training=True)
    head_loss, head_acc = evaluate()
    losses, accuracies, seconds = [], [], []
    best = (head_loss, head_acc, 0)
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        for x, y in train_ds:
            step(x, y)
        loss, accuracy = evaluate()
        seconds.append(time.monotonic() - started)
        losses.append(loss)
        accuracies.append(accuracy)
        if loss < best[0]:
            best = (loss, accuracy, epoch)
        elif epoch - best[2] >= patience:
            break
    return {"head_eval_loss": head_loss, "head_eval_accuracy": head_acc,
            "eval_loss": losses, "eval_accuracy": accuracies, "kept_epoch": best[2],
            "kept_eval_loss": best[0], "kept_eval_accuracy": best[1],
            "seconds_per_epoch": float(np.median(seconds)), "seconds": float(sum(seconds))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated among {','.join(VARIANTS)}")
    args = parser.parse_args(argv)
    names = chosen(parser, args.variants, VARIANTS, "--variants")
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fine-tune-variants-"))
    conversion = converted(args.data_dir, work)
    classes = (conversion / "labels.txt").read_text().splitlines()
    if len(classes) != 2:
        parser.error("the variants are written for two classes (one logit)")
    cfg = PipelineConfig(base_weights=args.base_weights, alpha=args.alpha).training_config()

    started = time.monotonic()
    model = build_model(2, cfg)
    x_feat, x_act, y = cached_split(model, cfg, str(conversion / "train" / "*"),
                                    ["original", "mirrored"])
    e_feat, e_act, e_y = cached_split(model, cfg, str(conversion / "eval" / "*"), ["original"])
    n = len(y) // 2
    deeper = {at: (deeper_activations(model, cfg, at, x_act[:n]),
                   deeper_activations(model, cfg, at, e_act))
              for at in sorted({VARIANTS[v]["fine_tune_at"] for v in names
                                if "fine_tune_at" in VARIANTS[v]})}
    print(f"cache: {x_act.nbytes / 2**20:.0f} MB train (2 views), {e_act.nbytes / 2**20:.0f} MB "
          f"eval, {time.monotonic() - started:.0f} s", flush=True)

    results: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        seed_cfg = dataclasses.replace(cfg, seed=seed)
        keras.utils.set_random_seed(seed)
        model = build_model(2, seed_cfg)
        _, kept, head_loss = fit_head(model, (x_feat[:n], y[:n]), (e_feat, e_y), seed_cfg, [])
        head = model.get_weights()
        print(f"seed {seed}: head kept epoch {kept}, eval loss {head_loss:.4f}", flush=True)
        for name in names:
            spec = VARIANTS[name]
            model.set_weights(head)
            keras.utils.set_random_seed(seed)
            if "fine_tune_at" in spec:
                train, evaluation = (deeper[spec["fine_tune_at"]][0], y[:n]), \
                    (deeper[spec["fine_tune_at"]][1], e_y)
            elif spec.get("mirror"):
                train, evaluation = (x_act, y), (e_act, e_y)
            else:
                train, evaluation = (x_act[:n], y[:n]), (e_act, e_y)
            r = run_variant(model, seed_cfg, spec, train, evaluation)
            results.setdefault(name, {})[str(seed)] = r
            print(f"seed {seed} {name}: eval loss {r['head_eval_loss']:.4f} (head) -> "
                  + ", ".join(f"{v:.4f}" for v in r["eval_loss"])
                  + f"; kept {r['kept_epoch']} ({r['kept_eval_loss']:.4f}, acc "
                  f"{r['kept_eval_accuracy']:.4f}); {r['seconds_per_epoch']:.1f} s/epoch",
                  flush=True)

    print(f"\n{date.today()}, {platform.node()}, {os.cpu_count()} cores, alpha {args.alpha}, "
          f"seeds {args.seeds}\n")
    print("| variant | kept > 0 (seeds) | kept eval loss by seed (head's) | kept eval acc by seed "
          "(head's) | epochs run | s / epoch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        rs = [results[name][str(s)] for s in seeds]
        wins = sum(r["kept_epoch"] > 0 for r in rs)
        print(f"| {name} | {wins} of {len(rs)} | "
              + ", ".join(f"{r['kept_eval_loss']:.4f} ({r['head_eval_loss']:.4f})" for r in rs)
              + " | " + ", ".join(f"{r['kept_eval_accuracy']:.4f} ({r['head_eval_accuracy']:.4f})"
                                  for r in rs)
              + " | " + ", ".join(str(len(r["eval_loss"])) for r in rs)
              + f" | {np.median([r['seconds_per_epoch'] for r in rs]):.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
