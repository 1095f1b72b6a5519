"""A SavedModel version as TensorFlow Serving holds it: a TF1 session, and one Session.run per
request on a SignatureDef's tensor names.

TensorFlow and numpy only (no gRPC, no tensorflow-serving-api), so that the side venvs of
benchmarks/serving_compat.py, which hold nothing but another TensorFlow release, load a model
through this same code as the local server and the pipeline's serving check
(serving/server/loader.py) do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.util import deprecation

from contract.interface import SAVED_MODEL_TAG


def load_session(path: str, tag: str = SAVED_MODEL_TAG) -> tuple[Any, Any]:
    """Imports the MetaGraph of a tag into a new graph and session, restores the variables
    through the SavedModel's saver and runs its init op (tables, assets): TF Serving's load.

    Args:
      path: a SavedModel directory (one version).
      tag: the MetaGraph tag.

    Returns:
      (the tf.compat.v1.Session, the MetaGraphDef).

    Raises:
      The TF loader's errors (OSError, ValueError, RuntimeError, tf.errors.OpError); the
      session is closed then.
    """
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    try:
        # The TF1 loader is deprecated in TF2, but it is TF Serving's path: no warning.
        with graph.as_default(), deprecation.silence():
            meta_graph = tf.compat.v1.saved_model.loader.load(session, [tag], path)
    except BaseException:
        session.close()
        raise
    return session, meta_graph


def run_signature(session: Any, signature: Any, arrays: Mapping[str, np.ndarray],
                  wanted: Sequence[str]) -> dict[str, np.ndarray]:
    """One Session.run feeding a SignatureDef's input tensors and fetching its outputs.

    Args:
      session: the version's session (load_session).
      signature: the SignatureDef.
      arrays: an array per input alias, all of the signature's aliases.
      wanted: the output aliases to fetch.

    Returns:
      The fetched outputs by alias.

    Raises:
      tf.errors.OpError: the run failed.
    """
    feeds = {signature.inputs[alias].name: array for alias, array in arrays.items()}
    return session.run({alias: signature.outputs[alias].name for alias in wanted}, feeds)
