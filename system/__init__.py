"""The artifact types Kubeflow Pipelines' UI draws: system.HTML, system.Markdown, system.Metrics,
system.ClassificationMetrics.

KFP's UI picks a visualization by the artifact's ML Metadata type name, which is the schema
title in the compiled spec. TFX 1.21's KubeflowV2DagRunner writes a custom artifact type's
TYPE_NAME as that title, and its container entrypoint imports the class back by the title as
a `<module>.<Class>` path. So these classes must be importable as `system.HTML` and so on:
hence this small top-level package, which holds nothing else.

HTML and Markdown are files at the artifact's uri (value artifacts), as KFP writes them;
the metrics are the artifact's custom properties, as the UI reads them.

No `from __future__ import annotations` here: TFX reads the component signature's annotations.
"""

from tfx.types.artifact import Artifact
from tfx.types.value_artifact import ValueArtifact


class _Text(ValueArtifact):
    """A UTF-8 text file at the artifact's uri."""

    def encode(self, value: str) -> bytes:
        """The file's bytes for `value`."""
        return value.encode("utf-8")

    def decode(self, serialized_value: bytes) -> str:
        """The text of the file's bytes."""
        return serialized_value.decode("utf-8")


class HTML(_Text):
    """A self-contained HTML page; KFP's UI shows it in the run's Visualizations."""

    TYPE_NAME = "system.HTML"


class Markdown(_Text):
    """A Markdown document; KFP's UI renders it."""

    TYPE_NAME = "system.Markdown"


class Metrics(Artifact):
    """Scalar metrics as float custom properties; KFP's UI lists them and compares runs."""

    TYPE_NAME = "system.Metrics"


class ClassificationMetrics(Artifact):
    """A confusion matrix in the `confusionMatrix` custom property, as KFP's SDK logs it
    ({"annotationSpecs": [{"displayName"}], "rows": [{"row": [counts]}]}); KFP's UI draws it."""

    TYPE_NAME = "system.ClassificationMetrics"
