"""Beam options for running locally: in memory, no runner download.

Since Beam 2.68 the DirectRunner first tries the Prism runner, which it downloads at run time;
naming the FnApiRunner directly keeps everything in this process tree and offline.
"""

from __future__ import annotations

FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def beam_pipeline_args(workers: int = 1) -> list[str]:
    """Arguments for an in-memory Beam pipeline with `workers` worker threads.

    Args:
      workers: the number of worker threads of the FnApiRunner.

    Returns:
      Beam pipeline arguments (`--flag=value` strings).
    """
    return [
        f"--runner={FN_API_RUNNER}",
        "--direct_running_mode=in_memory",
        f"--direct_num_workers={workers}",
    ]
