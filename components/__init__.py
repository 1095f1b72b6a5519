"""The pipeline's own TFX components: the data gate, the serving check, the idempotent pusher
and the run report."""

from contract import keras_env  # noqa: F401  (before TensorFlow loads)


def __getattr__(name: str):
    # TFX on Kubeflow imports custom artifact types by TYPE_NAME ("components.RunReport");
    # lazily, so that importing one component does not load the report's plotting stack.
    if name == "RunReport":
        from components.report import RunReport

        return RunReport
    raise AttributeError(f"module 'components' has no attribute {name!r}")
