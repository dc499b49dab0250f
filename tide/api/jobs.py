"""Public job API wire types (RunPod Serverless compatible).

See reference/runpod_protocol.md §2.  Requests are decoded strictly enough
to give a clear error (``input`` required; policy values in range) and
leniently enough for real clients (unknown top-level keys are tolerated:
the go and js SDKs send ``webhookV2`` and friends).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "FINAL_STATES",
    "MAX_WEBHOOK_URL",
    "JobPolicy",
    "JobRequest",
    "JobState",
    "S3Config",
    "StreamChunk",
]

JobState = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
FINAL_STATES: frozenset[str] = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})

_SEVEN_DAYS_MS = 7 * 86_400_000

# Every client string stored with a job is bounded, so that a job record and the
# outbox entry written with it stay far below the store's request limit (etcd:
# 1.5 MiB).  The error names the field and the limit ("length <= 2048 - at `$.webhook`").
MAX_WEBHOOK_URL = 2048
_Webhook = Annotated[str, Meta(max_length=MAX_WEBHOOK_URL)]
_Short = Annotated[str, Meta(max_length=256)]  # S3 access key ids and bucket names are short
_Secret = Annotated[str, Meta(max_length=1024)]
_Long = Annotated[str, Meta(max_length=2048)]  # URLs and object paths


class JobPolicy(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    execution_timeout: Annotated[int, Meta(ge=5_000, le=_SEVEN_DAYS_MS)] | None = None  # ms
    ttl: Annotated[int, Meta(ge=10_000, le=_SEVEN_DAYS_MS)] | None = None  # ms from submission
    low_priority: bool = False


class S3Config(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    access_id: _Short = ""
    access_secret: _Secret = ""
    bucket_name: _Short = ""
    endpoint_url: _Long = ""
    object_path: _Long = ""


class JobRequest(msgspec.Struct, frozen=True, kw_only=True, rename={"s3_config": "s3Config"}):
    input: Any
    webhook: _Webhook | None = None
    policy: JobPolicy | None = None
    s3_config: S3Config | None = None


class StreamChunk(msgspec.Struct, frozen=True, kw_only=True):
    output: Any
