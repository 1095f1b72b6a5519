"""Batch prediction throughput: `tfx-image-transfer-predict` (Beam's RunInference on the
in-memory runner, each file read and checked as ingestion checks it) against a plain in-process
loop over the same SavedModel (TF2's loader, batches of the same size, no checks), on the same
photos, in one run.

    scripts/in-env python benchmarks/batch_predict.py [--photos DIR] [--model-base-path DIR]
        [--batch-size 16] [--rounds 1] [--json report.json]

Default photos: every photo of ../shared/data/cats_vs_dogs (train and validation, 3000). Without
--model-base-path it exports an untrained 224 px, alpha 0.5 model (weights in ../shared), which
costs as much to run as a trained one. Prints images per second of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_latency import SHARED, export_quick_model  # noqa: E402

from contract.features import image_format  # noqa: E402
from contract.interface import IMAGES_INPUT, SERVING_SIGNATURE  # noqa: E402
from predict.model import resolve_version  # noqa: E402
from predict.run import predict_images  # noqa: E402

PHOTOS = SHARED / "data" / "cats_vs_dogs"


def _starts_as_image(path: Path) -> bool:
    with path.open("rb") as f:
        return image_format(f.read(16)) is not None


def plain_loop(version_dir: str, files: list[Path], batch_size: int) -> float:
    """Seconds to read the files and run the serving signature on them, batch by batch."""
    signature = tf.saved_model.load(version_dir).signatures[SERVING_SIGNATURE]
    start = time.monotonic()
    for i in range(0, len(files), batch_size):
        batch = [p.read_bytes() for p in files[i:i + batch_size]]
        signature(**{IMAGES_INPUT: tf.constant(batch)})["probabilities"].numpy()
    return time.monotonic() - start


def main() -> int:
    """Runs both, alternating, and prints the table.

    Returns:
      0.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--model-base-path", type=Path)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # The plain loop checks nothing, so it gets only the files that start as images (the
    # folder's checksum list, for one, is no photo); the command is given the whole folder.
    files = sorted(p for p in args.photos.rglob("*") if p.is_file() and _starts_as_image(p))
    with tempfile.TemporaryDirectory() as tmp:
        base = args.model_base_path
        if base is None:
            base = Path(tmp) / "model"
            export_quick_model(base, image_size=224)
        version = resolve_version(str(base))
        seconds: dict[str, list[float]] = {"tfx-image-transfer-predict": [], "plain loop": []}
        rows = 0
        for round_ in range(args.rounds):
            start = time.monotonic()
            rows = predict_images(version, str(args.photos), f"{tmp}/out-{round_}",
                                  batch_size=args.batch_size).rows
            seconds["tfx-image-transfer-predict"].append(time.monotonic() - start)
            seconds["plain loop"].append(plain_loop(version, files, args.batch_size))
    rates = {name: len(files) / float(np.median(s)) for name, s in seconds.items()}
    print(f"{len(files)} files ({rows} classified), batch size {args.batch_size}, "
          f"{args.rounds} round(s)\n")
    print("| path | images/s | seconds (median) |\n| --- | ---: | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {np.median(seconds[name]):.1f} |")
    ratio = rates["tfx-image-transfer-predict"] / rates["plain loop"]
    print(f"\nratio predict / plain loop: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"files": len(files), "rows": rows, "seconds": seconds,
                                         "images_per_second": rates, "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
