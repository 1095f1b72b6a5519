"""The exported forms side by side: file size, single-image latency on this CPU and accuracy on
labelled photos, for the SavedModel (as TF Serving runs it: encoded bytes in) and the on-device
float16 and int8 models (uint8 pixels in, one photo at a time, TFLite's interpreter), in one run.

    scripts/in-env python benchmarks/on_device.py --version-dir SERVING_DIR/MODEL/VERSION \\
        [--photos DIR] [--latency-photos 50] [--rounds 3] [--json out.json]

The version must hold tflite/ (a `make run` pushes it with the on-device forms that passed
their gate). The test-split accuracy of each form is the run's own (tflite/on_device.json: the
Evaluator's for the SavedModel, the gate's for the forms); --photos (a folder of <class>/
photos, default ../shared/data/cats_vs_dogs/validation) gives a second accuracy column on
whichever labelled photos you choose, scored here. Latency is the median of --rounds passes
over --latency-photos photos, the forms interleaved; the SavedModel's includes its in-graph
JPEG decode and resize, so the time the device spends decoding (trainer.images.device_pixels
on one photo) is given as a row of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from components.on_device_record import read_on_device, saved_model_bytes
from contract.artifacts import TFLITE_DIR, TFLITE_FORMS, tflite_file
from contract.interface import IMAGES_INPUT, PROBABILITIES, SERVING_SIGNATURE
from predict.model import read_labels
from trainer.images import device_pixels
from trainer.tflite_export import load_interpreter, photo_runner

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHOTOS = SHARED / "data" / "cats_vs_dogs" / "validation"


def main() -> int:
    """Measures every form and prints the table.

    Returns:
      0, or 2 on bad arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--latency-photos", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    version = str(args.version_dir)
    classes = read_labels(version)
    photos = sorted(p for p in args.photos.glob("*/*") if p.is_file())
    unknown = sorted({p.parent.name for p in photos} - set(classes))
    if not photos or unknown:
        parser.error(f"--photos {args.photos}: no <class>/ photos, or classes the model lacks: "
                     f"{unknown}")
    if not (args.version_dir / TFLITE_DIR).is_dir():
        parser.error(f"--version-dir {version} holds no {TFLITE_DIR}/ (run with --on-device)")
    encoded = [p.read_bytes() for p in photos]
    labels = np.array([classes.index(p.parent.name) for p in photos])

    signature = tf.saved_model.load(version).signatures[SERVING_SIGNATURE]
    interpreters = {form: load_interpreter((args.version_dir / TFLITE_DIR / tflite_file(form))
                                           .read_bytes())
                    for form in TFLITE_FORMS
                    if (args.version_dir / TFLITE_DIR / tflite_file(form)).exists()}
    size = int(interpreters[next(iter(interpreters))].get_input_details()[0]["shape"][1])

    def saved_model(one: bytes) -> np.ndarray:
        return signature(**{IMAGES_INPUT: tf.constant([one])})[PROBABILITIES].numpy()[0]

    def decode(one: bytes) -> np.ndarray:
        return device_pixels(tf.constant([one]), size).numpy()

    runners = {"SavedModel": saved_model,
               **{form: photo_runner(interpreter) for form, interpreter in interpreters.items()}}
    pixels = [decode(one) for one in encoded]
    inputs = {name: encoded if name == "SavedModel" else pixels for name in runners}
    accuracy = {name: float(np.mean(np.array([np.argmax(run(x)) for x in inputs[name]])
                                    == labels)) for name, run in runners.items()}

    timed = {**runners, "decode (device)": decode}
    timed_inputs = {**inputs, "decode (device)": encoded}
    latency: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.rounds):
        for name, run in timed.items():  # interleaved: each round runs every form
            for x in timed_inputs[name][:args.latency_photos]:
                start = time.perf_counter()
                run(x)
                latency[name].append((time.perf_counter() - start) * 1000)
    sizes = {"SavedModel": saved_model_bytes(version),
             **{form: (args.version_dir / TFLITE_DIR / tflite_file(form)).stat().st_size
                for form in interpreters}}
    record = read_on_device(version) or {"forms": {}}
    test_split = {"SavedModel": record.get("saved_model"), **record["forms"]}
    base_ms = statistics.median(latency["SavedModel"])
    rows = []
    for name in timed:
        ms = statistics.median(latency[name])
        rows.append({"form": name, "bytes": sizes.get(name), "median_ms": round(ms, 2),
                     "latency_ratio": round(ms / base_ms, 3),
                     "size_ratio": (round(sizes[name] / sizes["SavedModel"], 3)
                                    if name in sizes else None),
                     "accuracy": accuracy.get(name), "photos": len(photos),
                     "test_split_accuracy": (test_split.get(name) or {}).get("accuracy"),
                     "test_split_photos": (test_split.get(name) or {}).get("photos")})
    print(f"{len(photos)} photos of {args.photos}, {args.rounds} rounds x "
          f"{args.latency_photos} single-photo runs per form; {version}")
    print(f"{'form':16} {'size MB':>8} {'x SavedModel':>12} {'median ms':>10} "
          f"{'x SavedModel':>12} {'test split':>10} {'--photos':>9}")
    for r in rows:
        mb = f"{r['bytes'] / 2**20:.2f}" if r["bytes"] else "-"
        size_ratio = f"{r['size_ratio']:.3f}" if r["size_ratio"] else "-"
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        held = r["test_split_accuracy"]
        held = f"{held:.4f}" if held is not None else "-"
        print(f"{r['form']:16} {mb:>8} {size_ratio:>12} {r['median_ms']:>10.2f} "
              f"{r['latency_ratio']:>12.3f} {held:>10} {acc:>9}")
    if args.json:
        args.json.write_text(json.dumps({"version_dir": version, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
