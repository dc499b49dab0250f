"""Open the object store a URL names: ``file:///dir`` or ``s3://bucket/prefix``.

S3 credentials come from a file (``credentials-file``: ``AWS_ACCESS_KEY_ID=...``
and ``AWS_SECRET_ACCESS_KEY=...`` lines, the shape of a systemd
EnvironmentFile), else from the process environment (the same two variables,
which obstore reads by itself), never from the config file.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from tide.api.errors import InvalidArgument
from tiered_storage._local_objects import LocalObjectStore
from tiered_storage._objects import ObjectStore
from tiered_storage._s3_objects import S3ObjectStore, S3Settings

__all__ = ["open_object_store", "read_credentials"]


def open_object_store(
    url: str, *, endpoint_url: str = "", region: str = "", credentials_file: str = ""
) -> ObjectStore:
    """The store ``url`` names; InvalidArgument says what is wrong with the settings."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise InvalidArgument(f"blobs url {url!r}: a file URL needs an absolute path (file:///dir)")
        if endpoint_url or credentials_file:
            raise InvalidArgument("endpoint-url and credentials-file apply to s3:// blobs urls only")
        return LocalObjectStore(parts.path)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidArgument(f"blobs url {url!r} must be s3://bucket[/prefix] or file:///dir")
    if endpoint_url and urlsplit(endpoint_url).scheme not in ("http", "https"):
        raise InvalidArgument(f"endpoint-url {endpoint_url!r} must be an http(s) URL")
    key_id, secret = read_credentials(credentials_file) if credentials_file else ("", "")
    return S3ObjectStore(
        S3Settings(
            parts.netloc,
            prefix=parts.path,
            endpoint_url=endpoint_url.rstrip("/"),
            region=region or "us-east-1",
            access_key_id=key_id,
            secret_access_key=secret,
        )
    )


def read_credentials(path: str) -> tuple[str, str]:
    """(access key id, secret) from an EnvironmentFile-style file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidArgument(f"credentials-file {path}: cannot read it: {exc.strerror}") from None
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, eq, value = line.strip().partition("=")
        if eq and not name.startswith("#"):
            found[name.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    key_id, secret = found.get("AWS_ACCESS_KEY_ID", ""), found.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        raise InvalidArgument(
            f"credentials-file {path} must set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            " (one NAME=value a line)"
        )
    return key_id, secret
