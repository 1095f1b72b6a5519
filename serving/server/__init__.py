"""The local development server: TF Serving's gRPC and REST APIs for one model, loading each
version the way TF Serving does (a TF1 session, the SavedModel's saver, the warmup file).

    loader.py     a version loaded and run as TF Serving does (also used by the pipeline)
    core.py       versions, policy, labels, and the answers, protocol-neutral
    grpc_api.py   the gRPC adapter; rest_api.py + rest_json.py the REST adapter and codec
    app.py        both adapters over one core, and `tfx-image-transfer-server`
"""

from contract import keras_env  # noqa: F401  (before TensorFlow loads)
