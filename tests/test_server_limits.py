"""The pixel limit as a client of the local server meets it: the served graph refuses an image
whose header declares more than 40 MP (every GIF frame counted), or that is none of the
project's formats, with 400 / INVALID_ARGUMENT before it decodes, in serving_default's images
and inside from_examples' tf.Examples, as TF Serving running the same graph does; so
concurrent PNG bombs (1.5 MB each, 1.6 GB decoded) leave the server's memory where it was.

The bombs are generated here: zero rows deflated once per 1000 rows and the compressed block
repeated (a full flush makes blocks independent), so building one takes no real CPU.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import prediction_service_pb2_grpc

from contract import features
from contract.image_header import DEFAULT_MAX_IMAGE_PIXELS
from contract.interface import EXAMPLES_SIGNATURE
from serving.server import app
from tests.conftest import MODEL_NAME, REPO
from tests.serving_helpers import b64, free_port, grpc_request, wait_for

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
BOMB_SIDE = 23000
ROWS_PER_BLOCK = 1000


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def black_png(side: int) -> bytes:
    """A valid side x side 8-bit RGB PNG of zeros (side a multiple of ROWS_PER_BLOCK)."""
    row = b"\0" * (1 + 3 * side)  # filter byte, then RGB
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = z.compress(row * ROWS_PER_BLOCK) + z.flush(zlib.Z_FULL_FLUSH)
    final = b"\x03\x00"  # an empty final block (fixed Huffman codes)
    adler = ((len(row) * side) % 65521) << 16 | 1  # Adler-32 of zeros: a = 1, b = length
    stream = b"\x78\xda" + block * (side // ROWS_PER_BLOCK) + final + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", stream)
            + png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return black_png(BOMB_SIDE)


def example(image: bytes) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))})
    ).SerializeToString()


def test_the_bomb_is_a_real_png_that_decodes_to_1_6_gb(bomb, monkeypatch):
    assert 1_400_000 < len(bomb) < 1_700_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL refuses it too, by default
    with Image.open(io.BytesIO(bomb)) as im:
        assert (im.size, im.mode) == ((BOMB_SIDE, BOMB_SIDE), "RGB")
    # Inflating the whole stream checks every block and the Adler-32 (zlib verifies it).
    inflater, stream, size = zlib.decompressobj(), bomb[41:-16], 0
    while piece := inflater.decompress(stream, 1 << 26):
        size, stream = size + len(piece), inflater.unconsumed_tail
    assert inflater.eof and size == BOMB_SIDE * (1 + 3 * BOMB_SIDE)  # 1.59 GB of rows


def many_frame_gif(frames: int, width: int, height: int) -> bytes:
    """A real GIF whose logical screen is width x height and which holds that many frames."""
    buffer = io.BytesIO()
    first, *rest = [Image.new("P", (width, height), i % 250) for i in range(frames)]
    first.save(buffer, "GIF", save_all=True, append_images=rest, optimize=False, disposal=1)
    return buffer.getvalue()


def webp(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (0, 0, 0)).save(buffer, "WEBP")
    return buffer.getvalue()


def test_a_bomb_is_400_over_rest_and_invalid_argument_over_grpc(server, bomb, images):
    body = {"instances": [b64(images[0]), b64(bomb)]}
    answer = requests.post(server.rest_url + PREDICT, json=body, timeout=60)
    assert answer.status_code == 400
    assert (f"image too large: more than {DEFAULT_MAX_IMAGE_PIXELS} pixels, refused before "
            "decoding") in answer.json()["error"]
    examples = {"signature_name": EXAMPLES_SIGNATURE, "instances": [b64(example(bomb))]}
    answer = requests.post(server.rest_url + PREDICT, json=examples, timeout=60)
    assert answer.status_code == 400 and "too large" in answer.json()["error"]
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(grpc_request([bomb]), timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "image too large: more than" in e.value.details()
        assert len(stub.Predict(grpc_request(images[:2]), timeout=60).outputs) > 0  # serves on


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB, from /proc/<pid>/status."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {key: int(value) for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text,
                                                         re.M)}


def status_from_here(pid: int) -> dict[str, int]:
    """status_kb after resetting the peak to the current RSS (clear_refs 5), so that the peak
    read after a request is the request's own: an earlier request's peak, above the memory the
    server kept, would hide part of it."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_kb(pid)


@pytest.fixture(scope="module")
def server_process(exported_model) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m serving.server` on the exported model, as deployed."""
    rest_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--model-base-path",
         str(exported_model.base_path), "--grpc-port", str(free_port()),
         "--rest-port", str(rest_port)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{rest_port}"
    try:
        wait_for(lambda: process.poll() is None and requests.get(
            f"{url}/v1/models/{MODEL_NAME}", timeout=5).ok, "the server to load the model")
        yield process, url
    finally:
        process.terminate()
        process.wait(30)


def test_concurrent_bombs_do_not_raise_the_server_s_memory(server_process, bomb, images):
    process, url = server_process
    good = {"instances": [b64(i) for i in images[:4]]}
    assert requests.post(url + PREDICT, json=good, timeout=60).status_code == 200
    since_start = status_kb(process.pid)
    before = status_from_here(process.pid)
    bodies = [{"instances": [b64(bomb)] * 3}] * 4  # 4 clients x 3 bombs: 12 x 1.6 GB declared
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda b: requests.post(url + PREDICT, json=b, timeout=120),
                                bodies))
    after = status_kb(process.pid)
    assert [a.status_code for a in answers] == [400] * 4
    assert all("image too large" in a.json()["error"] for a in answers)
    # Only the bodies (4 x 6 MB of JSON) were held: the peak stayed far below one decode.
    assert max(since_start["VmHWM"], after["VmHWM"]) < 1.5 * 2**20, (since_start, after)
    assert after["VmHWM"] - before["VmHWM"] < 200 * 2**10, (before, after)
    assert requests.post(url + PREDICT, json=good, timeout=60).status_code == 200


def test_the_measure_sees_a_decode_within_the_limit(server_process, images):
    """The same measure does see memory move when a large image is allowed and decoded."""
    process, url = server_process
    # 36M pixels: within the exported graph's 40 MP limit; decoded, 108 MB as uint8 RGB.
    side = 6000
    before = status_from_here(process.pid)
    answer = requests.post(url + PREDICT, json={"instances": [b64(black_png(side))]},
                           timeout=120)
    after = status_kb(process.pid)
    assert answer.status_code == 200, answer.text
    assert after["VmHWM"] - before["VmHWM"] > 80 * 2**10, (before, after)


def test_a_request_byte_limit_below_one_is_a_one_line_start_up_error(tmp_path, capsys):
    assert app.main(["--model-base-path", str(tmp_path), "--max-request-bytes", "0"]) == 2
    assert capsys.readouterr().err == "error: --max-request-bytes must be at least 1\n"


def test_a_gif_of_many_frames_and_a_webp_are_refused_by_the_graph(server, images):
    # 11 frames of 2000 x 2000: a 4 MP screen, 44 MP read by the decoder.
    gif = many_frame_gif(11, 2000, 2000)
    answer = requests.post(server.rest_url + PREDICT, json={"instances": [b64(gif)]},
                           timeout=120)
    assert answer.status_code == 400 and "image too large" in answer.json()["error"], answer.text
    small = many_frame_gif(3, 40, 30)  # within the limit: answered, from its first frame
    answer = requests.post(server.rest_url + PREDICT, json={"instances": [b64(small)]},
                           timeout=60)
    assert answer.status_code == 200, answer.text
    answer = requests.post(server.rest_url + PREDICT, json={"instances": [b64(webp(64))]},
                           timeout=60)
    assert answer.status_code == 400
    assert "not an image: expected JPEG, PNG, GIF or BMP" in answer.json()["error"]
