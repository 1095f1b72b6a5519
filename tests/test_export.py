"""The exported SavedModel, loaded the way TensorFlow Serving loads it.

TF Serving imports the `serve` MetaGraph into a TF1 session, restores the variables through
the SavedModel's saver and calls Session::Run on the SignatureDef's tensors; so does
`saved_model_cli run`. These tests do exactly that, with TensorFlow's own APIs, and compare
with the Keras model called in-process.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from contract import features
from contract.interface import (
    CLASS_INDEX,
    CLASS_NAME,
    EXAMPLES_SIGNATURE,
    LABELS_ASSET,
    POSITIVE_PROBABILITY,
    PROBABILITIES,
    SAVED_MODEL_TAG,
    SERVING_SIGNATURE,
    WARMUP_FILE,
)
from contract.labels import parse_labels
from serving.server.loader import LoadError, SessionModel, load_like_tf_serving
from tests.conftest import (
    ALPHA,
    MODEL_NAME,
    SMALL_IMAGE_SIZE,
    WEIGHTS,
    small_model_config,
    training_config,
    validation_photos,
)
from tests.lenient_export import export_lenient_only
from trainer.config import TrainingConfig
from trainer.export import export_model
from trainer.images import decode_batch
from trainer.model import build_model, is_binary
from trainer.warmup import write_warmup_requests

SIZE = 96
ATOL = 1e-5


def model_config(seed: int) -> TrainingConfig:
    return training_config(image_size=SIZE, alpha=ALPHA, base_weights=str(WEIGHTS), seed=seed)


def photos(count: int = 6) -> list[bytes]:
    """Real JPEGs of both classes, and one PNG re-encoding."""
    data = [p.read_bytes() for p, _ in validation_photos()]
    picked = data[: count // 2] + data[-(count // 2):]
    png = tf.io.encode_png(tf.io.decode_jpeg(picked[0])).numpy()
    return [*picked, png]


def serialized_examples(images: list[bytes]) -> list[bytes]:
    return [tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}))
        .SerializeToString() for image in images]


def session_run(export_dir: str, signature_name: str, inputs: dict[str, list[bytes]]
                ) -> dict[str, np.ndarray]:
    """TF Serving's path with TensorFlow's own API: a session, the saver, Session.run."""
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [SAVED_MODEL_TAG],
                                                          export_dir)
        signature = meta_graph.signature_def[signature_name]
        feeds = {signature.inputs[k].name: np.array(v, dtype=object) for k, v in inputs.items()}
        return session.run({k: t.name for k, t in signature.outputs.items()}, feeds)


def keras_probabilities(model: keras.Model, images: list[bytes]) -> np.ndarray:
    logits = model(decode_batch(tf.constant(images), SIZE), training=False)
    if is_binary(model):
        positive = tf.sigmoid(logits)[:, 0].numpy()
        return np.stack([1 - positive, positive], axis=1)
    return tf.nn.softmax(logits).numpy()


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, str]:
    keras.utils.set_random_seed(3)
    model = build_model(2, model_config(seed=3))
    export_dir = str(tmp_path_factory.mktemp("binary") / "1")
    export_model(model, ["cats", "dogs"], SIZE, export_dir)
    return model, export_dir


def test_the_session_loader_answers_both_signatures_as_the_keras_model_does(binary):
    model, export_dir = binary
    images = photos()
    expected = keras_probabilities(model, images)
    assert np.ptp(expected[:, 1]) > 1e-3  # the images do get different answers

    served = session_run(export_dir, SERVING_SIGNATURE, {"images": images})
    assert set(served) == {PROBABILITIES, CLASS_INDEX, CLASS_NAME}
    np.testing.assert_allclose(served[PROBABILITIES], expected, atol=ATOL)
    np.testing.assert_array_equal(served[CLASS_INDEX], expected.argmax(1))
    assert [n.decode() for n in served[CLASS_NAME]] == [
        ["cats", "dogs"][i] for i in expected.argmax(1)]

    from_examples = session_run(export_dir, EXAMPLES_SIGNATURE,
                                {"examples": serialized_examples(images)})
    assert set(from_examples) == {PROBABILITIES, CLASS_INDEX, CLASS_NAME, POSITIVE_PROBABILITY}
    np.testing.assert_allclose(from_examples[POSITIVE_PROBABILITY], expected[:, 1], atol=ATOL)
    np.testing.assert_allclose(from_examples[PROBABILITIES], served[PROBABILITIES], atol=ATOL)

    # TF2's object loader agrees (it is what TFMA uses for from_examples).
    loaded = tf.saved_model.load(export_dir)
    assert set(loaded.signatures) == {SERVING_SIGNATURE, EXAMPLES_SIGNATURE}
    tf2 = loaded.signatures[SERVING_SIGNATURE](images=tf.constant(images))
    np.testing.assert_allclose(tf2[PROBABILITIES].numpy(), served[PROBABILITIES], atol=ATOL)


def test_saved_model_cli_run_answers_like_the_session(binary, tmp_path):
    _, export_dir = binary
    images = photos()
    inputs = tmp_path / "images.npy"
    np.save(inputs, np.array(images, dtype=object), allow_pickle=True)
    out = tmp_path / "out"
    result = subprocess.run(
        [shutil.which("saved_model_cli") or "saved_model_cli", "run", "--dir", export_dir,
         "--tag_set", SAVED_MODEL_TAG, "--signature_def", SERVING_SIGNATURE,
         "--inputs", f"images={inputs}", "--outdir", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = session_run(export_dir, SERVING_SIGNATURE, {"images": images})
    np.testing.assert_allclose(np.load(out / f"{PROBABILITIES}.npy"), expected[PROBABILITIES],
                               atol=ATOL)
    np.testing.assert_array_equal(np.load(out / f"{CLASS_INDEX}.npy"), expected[CLASS_INDEX])


@pytest.mark.slow
def test_multiclass_export_names_classes_from_whole_label_lines(tmp_path):
    classes = ["golden retriever", "persian cat", "tabby"]
    keras.utils.set_random_seed(5)
    model = build_model(len(classes), model_config(seed=5))
    export_dir = str(tmp_path / "1")
    export_model(model, classes, SIZE, export_dir)
    assert parse_labels((tmp_path / "1" / "assets" / LABELS_ASSET).read_text()) == classes
    images = photos()
    served = session_run(export_dir, SERVING_SIGNATURE, {"images": images})
    expected = keras_probabilities(model, images)
    np.testing.assert_allclose(served[PROBABILITIES], expected, atol=ATOL)
    assert [n.decode() for n in served[CLASS_NAME]] == [classes[i] for i in expected.argmax(1)]
    from_examples = session_run(export_dir, EXAMPLES_SIGNATURE,
                                {"examples": serialized_examples(images)})
    assert POSITIVE_PROBABILITY not in from_examples


def test_the_project_loader_replays_the_warmup_file_and_rejects_bad_bytes(binary, tmp_path):
    _, export_dir = binary
    version = tmp_path / "1"
    shutil.copytree(export_dir, version)
    images = photos(4)
    write_warmup_requests(str(version), images, MODEL_NAME)
    model, replayed = load_like_tf_serving(str(version))
    assert replayed == len(images) + 1  # one request per image, then one with all of them
    with pytest.raises(Exception, match="image") as error:
        model.run(SERVING_SIGNATURE, {"images": [b"definitely not an image"]})
    assert error.value.code.name == "INVALID_ARGUMENT"
    model.close()

    write_warmup_requests(str(version), [photos(2)[0], b"BM but not a bitmap"], MODEL_NAME)
    with pytest.raises(LoadError, match="warmup request 2"):
        load_like_tf_serving(str(version))


@pytest.mark.slow
def test_an_export_tf_serving_rejects_is_rejected_by_the_session_path(tmp_path):
    """The regression this file guards: a Keras 3 model saved inside a tf.Module loads in TF2
    but not in a session (tensorflow/serving#2226)."""
    keras.utils.set_random_seed(1)
    model = build_model(2, small_model_config())
    export_dir = export_lenient_only(model, SMALL_IMAGE_SIZE, str(tmp_path / "1"))
    images = photos(2)
    tf2 = tf.saved_model.load(export_dir).signatures[SERVING_SIGNATURE]
    assert tf2(images=tf.constant(images))[PROBABILITIES].shape == (len(images), 2)
    with pytest.raises(tf.errors.FailedPreconditionError, match="Could not find variable"):
        session_run(export_dir, SERVING_SIGNATURE, {"images": images})
    loaded = SessionModel.load(export_dir)  # the graph imports; the first run fails
    with pytest.raises(Exception, match="Could not find variable"):
        loaded.run(SERVING_SIGNATURE, {"images": images})
    loaded.close()


def test_every_export_carries_its_warmup_file(exported_model):
    assert (exported_model.version_dir / WARMUP_FILE).is_file()
    _, replayed = load_like_tf_serving(str(exported_model.version_dir))
    assert replayed == 3 + 1


def test_exported_model_fixture_is_a_real_export(exported_model):
    assert Path(exported_model.version_dir, "saved_model.pb").is_file()
    assert parse_labels((exported_model.version_dir / "assets" / LABELS_ASSET).read_text()) == [
        "cats", "dogs"]


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_the_served_graph_refuses_a_decompression_bomb_before_decoding(binary):
    """TF Serving runs the decode inside the graph, so the pixel limit must be there too: a
    1.5 MB PNG declaring 23000x23000 pixels would otherwise allocate 1.6 GB per request."""
    from tests.test_server_limits import black_png

    _, export_dir = binary
    bomb = black_png(23000)
    before = _peak_rss_bytes()
    for signature, inputs in ((SERVING_SIGNATURE, {"images": [photos(1)[0], bomb]}),
                              (EXAMPLES_SIGNATURE, {"examples": serialized_examples([bomb])})):
        with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
            session_run(export_dir, signature, inputs)
    assert _peak_rss_bytes() - before < 500 * 1024**2  # decoding it would add >= 1.6 GB


def test_the_graph_reads_the_same_header_sizes_as_the_python_parser():
    import io
    import random

    from PIL import Image

    from contract.features import image_format
    from contract.image_header import image_size
    from tests.test_server_limits import many_frame_gif, webp
    from trainer.images import declared_pixels

    def graph(data: bytes) -> int:
        return int(declared_pixels(tf.constant(data)))

    for fmt, size in (("JPEG", (70, 40)), ("PNG", (33, 9)), ("GIF", (300, 2)),
                      ("BMP", (5, 700))):
        buffer = io.BytesIO()
        Image.new("RGB", size, (200, 10, 10)).save(buffer, fmt)
        data = buffer.getvalue()
        width, height, _ = image_size(data, image_format(data))
        assert graph(data) == width * height == size[0] * size[1]
    jpeg = photos(1)[0]
    width, height, _ = image_size(jpeg, "jpeg")
    assert graph(jpeg) == width * height
    # One GIF rule: every frame counts (the decoder reads them all), in both readers, also
    # for truncated and corrupted files.
    gif = many_frame_gif(5, 40, 30)
    assert image_size(gif, "gif")[2] == graph(gif) == 5 * 40 * 30
    rng = random.Random(0)
    for cut in range(13, len(gif), 7):
        assert graph(gif[:cut]) == image_size(gif[:cut], "gif")[2], cut
    for _ in range(40):
        noisy = bytearray(gif)
        for at in rng.sample(range(13, len(gif)), 3):
            noisy[at] = rng.randrange(256)
        assert graph(bytes(noisy)) == image_size(bytes(noisy), "gif")[2]
    # Bytes of no project format: -1, which the graph refuses (WebP would decode unbounded).
    assert graph(b"not an image") == graph(webp(8)) == -1
