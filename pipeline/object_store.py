"""s3:// and minio:// locations, read and written through the S3 API (boto3).

TensorFlow 2.21 has no file system for either scheme, so the places the steps read or write
themselves there (the examples, the base weights, the serving dir) are copied to and from local
folders: whole objects and whole prefixes, as the KFP launcher moves artifacts.

The endpoint and the credentials come from the environment, as boto3 reads them:
AWS_ENDPOINT_URL (required for minio://, e.g. http://minio-service.kubeflow:9000),
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION (default us-east-1).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contract.artifacts import SAVED_MODEL_FILE

SCHEMES = ("s3", "minio")
ENDPOINT_ENV = "AWS_ENDPOINT_URL"
DEFAULT_REGION = "us-east-1"


class ObjectStoreError(RuntimeError):
    """An object-store location cannot be reached or read; the message is one line."""


def is_object_store(uri: str) -> bool:
    """Whether uri is an s3:// or minio:// location."""
    return uri.split("://", 1)[0] in SCHEMES and "://" in uri


def split(uri: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key or minio://bucket/key (a query string dropped)."""
    rest = uri.split("://", 1)[1].split("?", 1)[0]
    bucket, _, key = rest.partition("/")
    return bucket, key.rstrip("/")


def client(uri: str) -> Any:
    """A boto3 S3 client for uri's store, configured from the environment.

    Args:
      uri: a location in the store (minio:// needs AWS_ENDPOINT_URL).

    Returns:
      The client (path-style addressing, which MinIO needs and S3 accepts).

    Raises:
      ObjectStoreError: a minio:// location with no endpoint set.
    """
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get(ENDPOINT_ENV) or None
    if uri.startswith("minio://") and not endpoint:
        raise ObjectStoreError(f"{uri}: set {ENDPOINT_ENV} to the MinIO service "
                               "(e.g. http://minio-service.kubeflow:9000)")
    return boto3.client("s3", endpoint_url=endpoint,
                        region_name=os.environ.get("AWS_DEFAULT_REGION", DEFAULT_REGION),
                        config=Config(s3={"addressing_style": "path"}))


def _one_line(uri: str, error: Exception) -> ObjectStoreError:
    return ObjectStoreError(f"{uri}: {' '.join(str(error).split())}")


def keys(s3: Any, uri: str) -> list[str]:
    """The keys of the object at uri and of every object under it (a "/" boundary).

    Args:
      s3: a client (client()).
      uri: a location.

    Returns:
      The keys, sorted.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split(uri)
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        found = [o["Key"] for page in pages for o in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as e:
        raise _one_line(uri, e) from e
    return sorted(k for k in found if not key or k == key or k.startswith(key + "/"))


def download(s3: Any, uri: str, local: Path) -> int:
    """Copies the object at uri to the file local, or everything under uri into the folder
    local; nothing (and no folder) when there is nothing at uri.

    Args:
      s3: a client.
      uri: a location.
      local: the local file or folder.

    Returns:
      The number of files copied.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split(uri)
    found = keys(s3, uri)
    try:
        for name in found:
            target = local if name == key else local / name[len(key):].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, name, str(target))
    except (BotoCoreError, ClientError) as e:
        raise _one_line(uri, e) from e
    return len(found)


def upload(s3: Any, local: Path, uri: str, only: Iterable[Path] | None = None) -> int:
    """Copies the file local to uri, or the files of the folder local under uri, each
    saved_model.pb after the rest.

    Args:
      s3: a client.
      local: a file or a folder.
      uri: where it goes.
      only: the files of the folder to copy (default all).

    Returns:
      The number of files copied.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split(uri)
    if local.is_file():
        files, names = [local], [key]
    else:
        files = sorted((p for p in (local.rglob("*") if only is None else only) if p.is_file()),
                       # a store's poller must not see a graph before its variables
                       key=lambda p: (p.name == SAVED_MODEL_FILE, str(p)))
        names = [f"{key}/{p.relative_to(local).as_posix()}".lstrip("/") for p in files]
    try:
        for path, name in zip(files, names, strict=True):
            s3.upload_file(str(path), bucket, name)
    except (BotoCoreError, ClientError) as e:
        raise _one_line(uri, e) from e
    return len(files)


def read_bytes(uri: str) -> bytes:
    """The object at uri.

    Raises:
      ObjectStoreError: it cannot be read.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split(uri)
    try:
        return client(uri).get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as e:
        raise _one_line(uri, e) from e
