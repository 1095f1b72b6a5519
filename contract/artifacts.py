"""Files inside the pipeline's artifacts that more than one package reads."""

HISTORY_FILE = "history.json"  # ModelRun: {"classes", "config", "phase1", "phase2"} per epoch
INGESTION_REPORT_FILE = "ingestion_report.json"  # beside the converted splits: the accounting

# A SavedModel's graph, the file whose presence makes a version folder a model (TF Serving).
SAVED_MODEL_FILE = "saved_model.pb"
INT64_MAX = 2**63 - 1


def version_number(name: str) -> int | None:
    """A model base path's child name as TF Serving reads it: a version if it parses as an
    int64 ("007" is 7), else None (hidden staging folders, non-ASCII digits, anything else).

    Args:
      name: a folder name (a trailing "/" is ignored).

    Returns:
      The version number, or None.
    """
    name = name.rstrip("/")
    if not (name.isascii() and name.isdigit()) or int(name) > INT64_MAX:
        return None
    return int(name)


def version_names(names: list[str]) -> list[str]:
    """The version folders among a model base path's child names, highest version first.

    Args:
      names: the base path's children (as listed; trailing "/" ignored).

    Returns:
      The names of the versions, without "/".
    """
    versions = [n.rstrip("/") for n in names if version_number(n) is not None]
    return sorted(versions, key=int, reverse=True)


# The on-device models: the Trainer writes them into its model artifact under TFLITE_DIR; a
# pushed version holds, under the same folder name, the forms that passed the on-device gate.
TFLITE_DIR = "tflite"
TFLITE_FORMS = ("float16", "int8")  # float16 weights; full integer, calibrated on training photos
ON_DEVICE_FILE = "on_device.json"  # beside them: input, labels, each form's test accuracy


def tflite_file(form: str) -> str:
    """The file name of an on-device model form.

    Args:
      form: one of TFLITE_FORMS.

    Returns:
      e.g. "model_int8.tflite".
    """
    return f"model_{form}.tflite"
