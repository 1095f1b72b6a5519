"""`tfx-image-transfer-ingest` as a module: convert an image folder (e.g. as a standalone Beam
job on Dataflow)."""

import sys

from ingestion.cli import main

sys.exit(main())
