"""The launcher harness of `make kubeflow-test` (tests/kfp_launcher.py), against moto's S3
server on loopback, without a container engine: its paths and its object-store transfers."""

from __future__ import annotations

import pytest
from moto.server import ThreadedMotoServer

from tests.kfp_launcher import ObjectStore, local_path


@pytest.fixture(scope="module")
def store():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    store = ObjectStore(f"http://{host}:{port}", scheme="minio")
    store.client.create_bucket(Bucket="mlpipeline")
    yield store
    server.stop()


def test_local_paths_are_the_launchers():
    assert local_path("minio://mlpipeline/v2/r/t/model") == "/minio/mlpipeline/v2/r/t/model"
    assert local_path("s3://b/x?region=eu-west-1") == "/s3/b/x"
    assert local_path("gs://b/x") == "/gcs/b/x"
    with pytest.raises(ValueError, match="unsupported scheme"):
        local_path("/local/path")


def test_a_folder_goes_up_and_comes_down_whole(store, tmp_path):
    src = tmp_path / "model"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"pb")
    (src / "variables" / "variables.index").write_bytes(b"index")
    assert store.upload(src, "minio://mlpipeline/run/Trainer/model") == 2
    # A sibling whose name extends the prefix is not part of the artifact.
    store.upload(src / "saved_model.pb", "minio://mlpipeline/run/Trainer/model_run/x")
    assert sorted(store.keys("minio://mlpipeline/run/Trainer/model")) == [
        "run/Trainer/model/saved_model.pb", "run/Trainer/model/variables/variables.index"]
    dst = tmp_path / "pod" / "minio" / "mlpipeline" / "run" / "Trainer" / "model"
    assert store.download("minio://mlpipeline/run/Trainer/model", dst) == 2
    assert (dst / "variables" / "variables.index").read_bytes() == b"index"
    assert not (dst.parent / "model_run").exists()


def test_a_single_object_and_json(store, tmp_path):
    store.write_json({"artifacts": {}}, "minio://mlpipeline/run/t/executor_output.json")
    assert store.read_json("minio://mlpipeline/run/t/executor_output.json") == {"artifacts": {}}
    assert store.download("minio://mlpipeline/run/t/executor_output.json",
                          tmp_path / "out.json") == 1
    assert store.keys("minio://mlpipeline/nothing/here") == []
