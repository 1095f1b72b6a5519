"""`tfx-image-transfer-predict`: one row per good image, with the served model's answer for it;
every other file skipped with ingestion's reason; TFRecords of tf.Examples read alike; bad
flags, models and sources are one-line errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from contract import features
from ingestion.settings import SplitSettings
from ingestion.validate import read_image
from predict import cli
from predict.run import predict_images
from tests.conftest import MINI, SCENES, export_untrained, validation_photos
from tests.serving_helpers import ATOL, grpc_request, in_process

BAD_FILES = {"notes.txt": b"not a photo", "empty.jpg": b"", ".hidden.jpg": b"\xff\xd8\xff"}


def make_photo_folder(root: Path) -> Path:
    """The mini set's 40 validation photos, flat and in a subfolder, with bad files among them:
    text, an empty file, a hidden file, a truncated JPEG and a FIFO; in root (created)."""
    (root / "more").mkdir(parents=True)
    for i, (path, _) in enumerate(validation_photos()):
        shutil.copy(path, root / ("more" if i % 2 else ".") / path.name)
    for name, data in BAD_FILES.items():
        (root / name).write_bytes(data)
    (root / "more" / "truncated.jpg").write_bytes(validation_photos()[0][0].read_bytes()[:3000])
    os.mkfifo(root / "pipe.jpg")
    return root


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """make_photo_folder's photos and bad files."""
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "new photos")


def read_rows(output_dir: Path) -> tuple[list[dict], list[list[str]], list[list[str]]]:
    jsonl = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text()
             .splitlines()]
    with open(output_dir / "predictions.csv", newline="") as f:
        table = list(csv.reader(f))
    with open(output_dir / "skipped.csv", newline="") as f:
        skipped = list(csv.reader(f))
    return jsonl, table, skipped


def test_rows_are_the_served_model_s_answers_and_bad_files_are_skipped_as_ingestion_does(
        server, exported_model, photo_folder, tmp_path):
    out = tmp_path / "out"
    result = predict_images(str(exported_model.base_path), str(photo_folder), str(out),
                            batch_size=7)
    assert result.version_dir == str(exported_model.version_dir)
    jsonl, table, skipped = read_rows(out)
    assert result.rows == len(jsonl) == len(table) - 1 == 40
    assert table[0] == ["path", "class", "cats", "dogs"]
    assert [r["path"] for r in jsonl] == [row[0] for row in table[1:]] == sorted(
        r["path"] for r in jsonl)
    # The same photos through the local server's gRPC API, as a client would send them.
    photos = [(photo_folder / r["path"]).read_bytes() for r in jsonl]
    with grpc.insecure_channel(server.grpc_address) as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            grpc_request(photos), timeout=120)
    served = tf.make_ndarray(answer.outputs["probabilities"])
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in jsonl], served,
                               atol=ATOL)
    np.testing.assert_allclose([[float(v) for v in row[2:]] for row in table[1:]], served,
                               atol=ATOL)
    names = [n.decode() for n in tf.make_ndarray(answer.outputs["class_name"])]
    assert [r["class"] for r in jsonl] == [row[1] for row in table[1:]] == names
    # Skipped: with ingestion's own reason for each file, counted by reason.
    settings = SplitSettings()
    expected = {"pipe.jpg": "not a regular file", ".hidden.jpg": "hidden file"}
    for name in ("notes.txt", "empty.jpg", "more/truncated.jpg"):
        expected[name] = read_image(str(photo_folder / name), settings)[2]
    assert skipped[0] == ["path", "reason"] and dict(skipped[1:]) == expected
    assert sum(result.skipped.values()) == 5 and result.skipped["hidden file"] == 1


def test_tfrecords_of_examples_give_the_same_rows(mini_tfrecords, exported_model, tmp_path):
    pattern = os.path.join(mini_tfrecords.output_dir, "test", "*")
    bad = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(bad)) as writer:
        writer.write(b"\x00not a protobuf")
        writer.write(tf.train.Example().SerializeToString())  # no image feature
    out = tmp_path / "out"
    result = predict_images(str(exported_model.version_dir), f"{pattern[:-1]}*", str(out))
    jsonl, _, skipped = read_rows(out)
    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(
        tf.io.gfile.glob(pattern))]
    by_path = {e.features.feature[features.PATH_KEY].bytes_list.value[0].decode():
               e.features.feature[features.IMAGE_KEY].bytes_list.value[0] for e in examples}
    assert result.rows == len(jsonl) == len(by_path) and skipped == [["path", "reason"]]
    paths = [r["path"] for r in jsonl]
    assert set(paths) == set(by_path)
    reference = in_process(exported_model.version_dir, [by_path[p] for p in paths])
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in jsonl],
                               reference["probabilities"], atol=ATOL)

    out = tmp_path / "bad-out"
    result = predict_images(str(exported_model.version_dir), str(bad), str(out))
    _, _, skipped = read_rows(out)
    assert result.rows == 0 and sorted(r[1] for r in skipped[1:]) == [
        "no single 'image' bytes feature", "not a tf.Example"]
    assert all(r[0] == str(bad) for r in skipped[1:])


def test_six_classes(tmp_path):
    if not SCENES.is_dir():
        pytest.skip(f"no {SCENES} (the six-class scene photos are not downloadable)")
    classes = sorted(p.name for p in (SCENES / "validation").iterdir() if p.is_dir())
    version = export_untrained(tmp_path / "scenes" / "1", classes)
    out = tmp_path / "out"
    result = predict_images(str(version.parent), str(SCENES / "validation"), str(out))
    jsonl, table, _ = read_rows(out)
    assert table[0] == ["path", "class", *classes] and result.rows == len(jsonl) > 100
    probabilities = np.array([list(r["probabilities"].values()) for r in jsonl])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    first = [r["path"] for r in jsonl[:5]]
    reference = in_process(version, [(SCENES / "validation" / p).read_bytes() for p in first])
    np.testing.assert_allclose(probabilities[:5], reference["probabilities"], atol=ATOL)


@pytest.mark.parametrize("args, message", [
    (["{photos}", "--model", "{nothing}", "--output-dir", "{out}"],
     "error: --model {nothing} holds no saved_model.pb, nor numbered versions that do"),
    (["{nothing}/*.tfrecord", "--model", "{model}", "--output-dir", "{out}"],
     "error: {nothing}/*.tfrecord is neither a folder nor a pattern that matches files"),
    (["{photos}", "--model", "{model}", "--output-dir", "/proc/no/such"],
     "error: --output-dir /proc/no/such cannot be made"),
])
def test_bad_models_sources_and_outputs_are_one_line_errors(exported_model, tmp_path, capsys,
                                                            args, message):
    values = {"photos": str(MINI / "validation"), "nothing": str(tmp_path),
              "model": str(exported_model.base_path), "out": str(tmp_path / "out")}
    assert cli.main([a.format(**values) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(**values)) and err.count("\n") == 1, err


def test_a_bad_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["x", "--model", "m", "--output-dir", "o", "--batch-size", "0"])
    assert exit_.value.code == 2
    assert "--batch-size must be in [1, 4096]" in capsys.readouterr().err
