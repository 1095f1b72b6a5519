"""Is the Trainer input-bound? Fine-tuning steps per second fed from the TFRecords (decoded
every epoch, as when the data exceeds the cache budget) against the same batches fed from
memory, side by side in one run.

    scripts/in-env python benchmarks/input_throughput.py --tfrecords DIR/train \
        --base-weights ../shared/weights/<MobileNetV2 alpha 0.5 no-top>.h5 --alpha 0.5 \
        [--image-size 224] [--steps 20] [--rounds 3]

DIR is a conversion folder written by ingestion (outputs/tfrecords/<fingerprint>). Each round
times --steps phase-2 training steps (base unfrozen from --fine-tune-at) from each source, in
alternating order, so machine noise hits both alike. Prints the steps/s of each and the ratio
TFRecords / memory (the target is >= 0.95).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import keras
import tensorflow as tf

import contract.keras_env  # noqa: F401
from pipeline.config import PipelineConfig
from trainer.data import input_fn
from trainer.model import build_model, compile_model, unfreeze_top


def steps_per_second(model: keras.Model, batches: tf.data.Dataset, steps: int) -> float:
    """Times `steps` training steps over the (repeated) dataset, after one warm-up step."""
    iterator = iter(batches.repeat())
    model.train_on_batch(*next(iterator))
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*next(iterator))
    return steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tfrecords", required=True, help="a split folder of TFRecord files")
    parser.add_argument("--base-weights", required=True)
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--image-size", type=int, default=PipelineConfig().image_size)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = PipelineConfig(base_weights=args.base_weights, alpha=args.alpha,
                         image_size=args.image_size).training_config()
    model = build_model(2, cfg)
    unfreeze_top(model, cfg.fine_tune_at)
    compile_model(model, keras.optimizers.RMSprop(cfg.learning_rate * cfg.fine_tune_lr_factor))

    def labelled(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.map(lambda x, y: (x, tf.cast(y, tf.float32)[:, None]))

    streamed = labelled(input_fn(f"{args.tfrecords}/*", cfg, training=True, cache=False))
    # The same batches, decoded once and held in memory.
    held = list(streamed.take(args.steps + 1))
    in_memory = tf.data.Dataset.from_tensor_slices(
        (tf.stack([x for x, _ in held]), tf.stack([y for _, y in held])))
    rates: dict[str, list[float]] = {"tfrecords": [], "memory": []}
    for round_ in range(args.rounds):
        order = ("tfrecords", "memory") if round_ % 2 == 0 else ("memory", "tfrecords")
        for name in order:
            source = streamed if name == "tfrecords" else in_memory
            rates[name].append(steps_per_second(model, source, args.steps))
            print(f"round {round_ + 1} {name}: {rates[name][-1]:.2f} steps/s", flush=True)
    tfrecords, memory = (statistics.median(rates[k]) for k in ("tfrecords", "memory"))
    print(f"\n{args.image_size} px, batch {cfg.batch_size}: TFRecords {tfrecords:.2f} steps/s, "
          f"memory {memory:.2f} steps/s, ratio {tfrecords / memory:.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
