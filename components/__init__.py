"""Pipeline pieces beyond the standard TFX components: the data gate, the serving check,
the idempotent pusher and the run report."""


def __getattr__(name: str):
    # TFX on Kubeflow imports custom artifact types by TYPE_NAME ("components.RunReport");
    # lazily, so that importing ingestion does not load TFX.
    if name == "RunReport":
        from components.report import RunReport

        return RunReport
    raise AttributeError(f"module 'components' has no attribute {name!r}")
