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
    "JobPolicy",
    "JobRequest",
    "JobState",
    "S3Config",
    "StreamChunk",
]

JobState = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
FINAL_STATES: frozenset[str] = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})

_SEVEN_DAYS_MS = 7 * 86_400_000


class JobPolicy(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    execution_timeout: Annotated[int, Meta(ge=5_000, le=_SEVEN_DAYS_MS)] | None = None  # ms
    ttl: Annotated[int, Meta(ge=10_000, le=_SEVEN_DAYS_MS)] | None = None  # ms from submission
    low_priority: bool = False


class S3Config(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    access_id: str = ""
    access_secret: str = ""
    bucket_name: str = ""
    endpoint_url: str = ""
    object_path: str = ""


class JobRequest(msgspec.Struct, frozen=True, kw_only=True, rename={"s3_config": "s3Config"}):
    input: Any
    webhook: str | None = None
    policy: JobPolicy | None = None
    s3_config: S3Config | None = None


class StreamChunk(msgspec.Struct, frozen=True, kw_only=True):
    output: Any
