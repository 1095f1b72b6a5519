"""Files inside the pipeline's artifacts that more than one package reads."""

HISTORY_FILE = "history.json"  # ModelRun: {"classes", "config", "phase1", "phase2"} per epoch
INGESTION_REPORT_FILE = "ingestion_report.json"  # beside the converted splits: the accounting
