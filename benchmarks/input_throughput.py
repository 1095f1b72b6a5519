"""Is the Trainer input-bound? Fine-tuning steps per second fed as the Trainer feeds phase 2
and fed by decoding the TFRecords on every pass, against the same batches fed from memory,
side by side in one run.

    scripts/in-env python benchmarks/input_throughput.py --tfrecords DIR/train \
        --base-weights ../shared/weights/<MobileNetV2 alpha 0.5 no-top>.h5 --alpha 0.5 \
        [--image-size 224] [--steps 20] [--rounds 3] [--trace DIR]

DIR is a conversion folder written by ingestion (outputs/tfrecords/<fingerprint>). The sources:

* trainer: trainer.data's decoded examples after one full pass, as phase 2 over images reads
  them once a first pass has filled the in-memory cache (when the images fit its budget). That
  is the tutorial recipe's phase 2; the default recipe's trains on cached activations instead
  (trainer.fine_tune_cache) and keeps no images;
* streamed: the same input with the cache off, decoding every batch, as data beyond the
  budget is fed;
* memory: the batches decoded beforehand and held as tensors.

Each round times --steps phase-2 training steps (base unfrozen from --fine-tune-at) from each
source, in rotating order, so machine noise hits all alike. Each timing also splits out the
profile that says why a source is slower: the time the loop waits for the input's next batch
(an input stall) and the process CPU time per step (training plus the input's own work, e.g.
decoding, on the same cores). Prints the medians of each source and the ratios to memory (at 0.95
or more, the input keeps up with training).

With --trace, --steps more steps of each source are then traced with the TF profiler (the
traces are written under DIR, for TensorBoard's profile tab), and each trace's host events
are summed per step: the training loop's IteratorGetNext (its wait for a batch) and the input
kernels tf.data runs (parse, decode, resize; thread time, on any thread).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

import contract.keras_env  # noqa: F401
from pipeline.config import PipelineConfig
from trainer.data import (
    batched,
    binary_labels,
    count_records,
    decoded_examples,
    fits_in_cache,
    input_fn,
)
from trainer.model import build_model, compile_model, unfreeze_top


@dataclass
class Timing:
    """One timed run of training steps from one source."""

    steps_per_second: float
    wait_ms: float  # per step, waiting for the input's next batch: an input stall
    cpu_seconds: float  # per step, this process on all cores: training plus the input's work


def warmed_up(model: keras.Model, batches: tf.data.Dataset) -> Iterator:
    """An endless iterator over the batches, after one untimed training step from it.

    Args:
      model: the compiled model.
      batches: (images, labels) batches.

    Returns:
      The iterator, past its first batch.
    """
    iterator = iter(batches.repeat())
    model.train_on_batch(*next(iterator))
    return iterator


def time_steps(model: keras.Model, batches: tf.data.Dataset, steps: int) -> Timing:
    """Times `steps` training steps over the (repeated) dataset, after one warm-up step.

    Args:
      model: the compiled model.
      batches: (images, labels) batches.
      steps: how many steps to time.

    Returns:
      The steps per second, and per step the wait for input and the process CPU time.
    """
    iterator = warmed_up(model, batches)
    waited = 0.0
    cpu_started, started = time.process_time(), time.perf_counter()
    for _ in range(steps):
        asked = time.perf_counter()
        batch = next(iterator)
        waited += time.perf_counter() - asked
        model.train_on_batch(*batch)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return Timing(steps / seconds, 1000 * waited / steps, cpu / steps)


# Host-trace events (op types) of the input's own work, and of the loop's wait for a batch.
INPUT_KERNELS = ("ParseExample", "ParseSingleExample", "ExtractJpegShape", "DecodeImage",
                 "DecodeJpeg", "DecodePng", "DecodeGif", "DecodeBmp", "ResizeBilinear")
GET_NEXT = "IteratorGetNextOp::DoCompute"


def trace_summary(logdir: str, steps: int) -> dict[str, float]:
    """Per-step milliseconds of the input's events in the newest TF profiler trace under logdir.

    Args:
      logdir: the folder given to tf.profiler.experimental.start.
      steps: the number of training steps traced.

    Returns:
      {"get_next": the loop's IteratorGetNext time, "input_kernels": the thread time of
      INPUT_KERNELS}, in ms per step.
    """
    traces = sorted(tf.io.gfile.glob(f"{logdir}/plugins/profile/*/*.xplane.pb"))
    space = xplane_pb2.XSpace()
    with tf.io.gfile.GFile(traces[-1], "rb") as f:
        space.ParseFromString(f.read())
    totals: collections.Counter[str] = collections.Counter()
    for plane in (p for p in space.planes if p.name == "/host:CPU"):
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if name.startswith(GET_NEXT):
                    totals["get_next"] += event.duration_ps
                elif name.startswith(INPUT_KERNELS):
                    totals["input_kernels"] += event.duration_ps
    return {key: totals[key] / 1e9 / steps for key in ("get_next", "input_kernels")}


def traced_steps(model: keras.Model, batches: tf.data.Dataset, steps: int,
                 logdir: str) -> dict[str, float]:
    """Runs `steps` training steps under the TF profiler, after one untraced warm-up step.

    Args:
      model: the compiled model.
      batches: (images, labels) batches.
      steps: how many steps to trace.
      logdir: where the profiler writes the trace.

    Returns:
      trace_summary of the trace.
    """
    iterator = warmed_up(model, batches)
    tf.profiler.experimental.start(logdir)
    try:
        for _ in range(steps):
            model.train_on_batch(*next(iterator))
    finally:
        tf.profiler.experimental.stop()
    return trace_summary(logdir, steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tfrecords", required=True, help="a split folder of TFRecord files")
    parser.add_argument("--base-weights", required=True)
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--image-size", type=int, default=PipelineConfig().image_size)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="rounds (each times every source)")
    parser.add_argument("--trace", metavar="DIR",
                        help="also trace --steps steps of each source with the TF profiler")
    args = parser.parse_args(argv)
    cfg = PipelineConfig(base_weights=args.base_weights, alpha=args.alpha,
                         image_size=args.image_size).training_config()
    model = build_model(2, cfg)
    unfreeze_top(model, cfg.fine_tune_at)
    compile_model(model, keras.optimizers.RMSprop(cfg.learning_rate * cfg.fine_tune_lr_factor))

    trainer_examples = decoded_examples(f"{args.tfrecords}/*", cfg)
    if not fits_in_cache(count_records(f"{args.tfrecords}/*"), cfg.image_size):
        parser.error("the split exceeds the decoded-image cache budget; the trainer source "
                     "would stream: use a smaller split")
    for _ in batched(trainer_examples, cfg, training=False):  # phase 1's pass fills the cache
        pass
    sources = {
        "trainer": binary_labels(batched(trainer_examples, cfg, training=True)),
        "streamed": binary_labels(input_fn(f"{args.tfrecords}/*", cfg, training=True,
                                           cache=False)),
    }
    # The same kind of batches (full ones, so they stack), decoded once and held in memory.
    repeated = decoded_examples(f"{args.tfrecords}/*", cfg, cache=False).repeat()
    held = list(binary_labels(batched(repeated, cfg, training=True)).take(args.steps + 1))
    sources["memory"] = tf.data.Dataset.from_tensor_slices(
        (tf.stack([x for x, _ in held]), tf.stack([y for _, y in held])))
    names = list(sources)
    timings: dict[str, list[Timing]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            timing = time_steps(model, sources[name], args.steps)
            timings[name].append(timing)
            print(f"round {round_ + 1} {name}: {timing.steps_per_second:.2f} steps/s, "
                  f"input wait {timing.wait_ms:.1f} ms/step, CPU {timing.cpu_seconds:.2f} s/step",
                  flush=True)
    print(f"\n{args.image_size} px, batch {cfg.batch_size}, medians of {args.rounds} rounds:")
    median = {}
    for name in names:
        median[name] = statistics.median(t.steps_per_second for t in timings[name])
        wait = statistics.median(t.wait_ms for t in timings[name])
        cpu = statistics.median(t.cpu_seconds for t in timings[name])
        print(f"  {name:9}{median[name]:.2f} steps/s, input wait {wait:.1f} ms/step, "
              f"CPU {cpu:.2f} s/step")
    for name in ("trainer", "streamed"):
        print(f"ratio {name} / memory: {median[name] / median['memory']:.3f} "
              "(the input keeps up at >= 0.95)")
    if args.trace:
        print(f"\nTF profiler, {args.steps} steps of each source (traces under {args.trace}):")
        for name in names:
            traced = traced_steps(model, sources[name], args.steps, f"{args.trace}/{name}")
            print(f"  {name:9}IteratorGetNext {traced['get_next']:.1f} ms/step, input kernels "
                  f"{traced['input_kernels']:.1f} ms/step (thread time)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
