"""Bounds on what a worker stores with a job, so a job record and everything
written with it (claim, queue entry, outbox entry) stays far below the store's
request limit (etcd: 1.5 MiB).

Client fields are bounded where they are decoded (tide/api/jobs.py: a 400 that
names the field).  A worker's answer cannot be refused that way: the runpod SDK
drops a result answered with a 4xx, and the job would look lost and run again.
So outputs above the inline limit go to blob storage (like inputs), an error
above ``MAX_ERROR_BYTES`` is cut to a string that says so, and a record the
store still refuses (written before these bounds) ends FAILED with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from coordinator._schema import JobRecord, encode
from tide.api.errors import InvalidArgument
from tide.api.jobs import MAX_WEBHOOK_URL

__all__ = [
    "MAX_ERROR_BYTES",
    "MAX_INLINE_LIMIT",
    "MAX_JSON_DEPTH",
    "MAX_STREAM_CHUNK",
    "bounded_error",
    "decode_json",
    "json_too_deep",
    "shrunk_for_store",
]

MAX_ERROR_BYTES = 64 * 1024
# The largest inline input or output ([jobs] inline-limit): one of each, the error, the
# webhook and s3Config still fit one etcd request with room to spare.
MAX_INLINE_LIMIT = 512 * 1024
MAX_STREAM_CHUNK = 1024 * 1024  # one job-stream chunk, stored under its own key


def bounded_error(error: Any) -> Any:
    """A worker's ``error`` as stored: unchanged when small, else its start as a string."""
    if error is None or isinstance(error, bool | int | float):
        return error
    raw = encode(error)
    if len(raw) <= MAX_ERROR_BYTES:
        return error
    text = error if isinstance(error, str) else raw.decode(errors="replace")
    head = text.encode()[: MAX_ERROR_BYTES - 200].decode(errors="ignore")
    return f"{head} ... [error cut: the worker sent {len(raw)} bytes; the limit is {MAX_ERROR_BYTES}]"


def shrunk_for_store(record: JobRecord) -> JobRecord:
    """The record FAILED with the reason, without the parts that made the store refuse it."""
    oversized_hook = len(record.webhook) > MAX_WEBHOOK_URL
    return msgspec.structs.replace(
        record,
        status="FAILED",
        output=None,
        output_blob="",
        has_output=False,
        error="the job's result was too large to store; it was dropped",
        webhook="" if oversized_hook else record.webhook,
        s3_config=None if oversized_hook or len(encode(record.s3_config)) > 8192 else record.s3_config,
    )


MAX_JSON_DEPTH = 128  # far deeper than any real input; a decoder recursing deeper is an attack


def json_too_deep(body: bytes, decoded: Callable[[], Any]) -> bool:
    """Whether decoded JSON nests deeper than ``MAX_JSON_DEPTH``.  Without a bound, a
    record decoded at one stack depth may not decode at a deeper one (the view's
    watch loop).  Cheap for ordinary bodies: only a bracket-heavy one is walked."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return False
    stack: list[tuple[Any, int]] = [(decoded(), 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


_TOO_DEEP = f"JSON nests deeper than {MAX_JSON_DEPTH} levels"


def decode_json(body: bytes, what: str, type_: Any = Any) -> Any:
    """Decode client or worker JSON: InvalidArgument names ``what`` for bad JSON and for
    nesting deeper than ``MAX_JSON_DEPTH`` (the decoder's own RecursionError included)."""
    try:
        value = msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"invalid {what}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for bad UTF-8
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument(f"{what}: {_TOO_DEEP}") from None
    if json_too_deep(body, lambda: value if type_ is Any else msgspec.json.decode(body)):
        raise InvalidArgument(f"{what}: {_TOO_DEEP}")
    return value
