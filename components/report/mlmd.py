"""A local run's steps as ML Metadata recorded them: each component's status and wall time.

Shared by the report (which reads them while it runs, as the run's last step) and the end-of-run
summary (pipeline/summary.py).
"""

from __future__ import annotations

from typing import Any

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2


def open_store(path: str) -> metadata_store.MetadataStore:
    """A read-only connection to a SQLite ML Metadata store.

    Args:
      path: the SQLite file LocalDagRunner writes.

    Returns:
      The store.
    """
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def latest_run_executions(store: metadata_store.MetadataStore, pipeline_name: str) -> list:
    """Executions of the pipeline's newest run, oldest first.

    Args:
      store: the ML Metadata store.
      pipeline_name: the pipeline's name (its "pipeline" context).

    Returns:
      The executions (LocalDagRunner makes each run a child context of the pipeline's
      context); empty if the pipeline never ran.
    """
    pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_ctx is None:
        return []
    run_type = store.get_context_type("pipeline_run")
    runs = [c for c in store.get_children_contexts_by_context(pipeline_ctx.id)
            if c.type_id == run_type.id]
    if not runs:
        return []
    latest = max(runs, key=lambda c: c.create_time_since_epoch)
    return sorted(store.get_executions_by_context(latest.id),
                  key=lambda e: e.create_time_since_epoch)


def node_id(store: metadata_store.MetadataStore, execution: Any) -> str:
    """The component id an execution ran (its "node" context, "<pipeline>.<id>").

    Args:
      store: the ML Metadata store.
      execution: the execution.

    Returns:
      The id, or "execution-<n>" if it has no node context.
    """
    node_type = store.get_context_type("node")
    for ctx in store.get_contexts_by_execution(execution.id):
        if ctx.type_id == node_type.id:
            return ctx.name.split(".", 1)[-1]
    return f"execution-{execution.id}"


def step_entry(store: metadata_store.MetadataStore, execution: Any) -> dict[str, Any]:
    """An execution as the summary and report list it.

    Args:
      store: the ML Metadata store.
      execution: the execution.

    Returns:
      {"component", "status" (COMPLETE, CACHED, FAILED, RUNNING...), "seconds"}.
    """
    seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
    return {"component": node_id(store, execution),
            "status": metadata_store_pb2.Execution.State.Name(execution.last_known_state),
            "seconds": round(seconds, 1)}


def run_steps(metadata_path: str, pipeline_name: str) -> list[dict[str, Any]]:
    """The newest run's steps, in the order they started.

    Args:
      metadata_path: the SQLite ML Metadata file.
      pipeline_name: the pipeline's name.

    Returns:
      A `step_entry` per execution.
    """
    store = open_store(metadata_path)
    return [step_entry(store, e) for e in latest_run_executions(store, pipeline_name)]
