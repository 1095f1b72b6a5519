"""The content fingerprint of an input: the name of its conversion's output folder."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import time
from dataclasses import asdict

from ingestion.reading import digest_source
from ingestion.scan import ImageTree
from ingestion.settings import NEAR_DUPLICATE_MAX_DISTANCE, SplitSettings

LOG = logging.getLogger("ingestion")

# Bump when the conversion output changes, so old fingerprints are not reused.
CONVERSION_VERSION = 3


def fingerprint(tree: ImageTree, settings: SplitSettings) -> str:
    """Content fingerprint of the input (paths, labels, bytes) and the conversion settings.

    Candidates are read (streamed, at most settings.max_file_bytes each) and hashed; entries
    skipped at the scan count by path and reason only (they are never opened).

    Args:
      tree: the scan of the image folder.
      settings: the split settings, part of the fingerprint.

    Returns:
      The first 16 hex digits of a SHA-256.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"version": CONVERSION_VERSION, "layout": tree.layout,
                         "classes": tree.classes, "settings": asdict(settings),
                         "near_duplicate_max_distance": NEAR_DUPLICATE_MAX_DISTANCE}).encode())
    for path, reason, label_name in tree.skipped:
        h.update(f"{path}\0skipped:{label_name}:{reason}\n".encode())
    entries = [(f.path, f"{f.label}:{f.origin}") for f in tree.files]
    paths = [f.location(tree.root) for f in tree.files]

    def hash_file(path: str | bytes) -> str:
        return digest_source(path, settings.max_file_bytes)

    started, last = time.monotonic(), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for i, ((path, tag), digest) in enumerate(zip(entries, pool.map(hash_file, paths),
                                                      strict=True)):
            h.update(f"{path}\0{tag}\0{digest}\n".encode())
            if time.monotonic() - last > 5:
                last = time.monotonic()
                LOG.info("fingerprinting: %d/%d files", i + 1, len(entries))
    LOG.info("fingerprinted %d files in %.1fs", len(entries), time.monotonic() - started)
    return h.hexdigest()[:16]

