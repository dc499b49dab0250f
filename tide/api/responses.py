"""The shapes of the coordinator's JSON answers on the public, worker and operations routes.

The route handlers build these answers as plain dicts (the hot paths skip a Struct's
construction); these Structs describe them exactly, for the OpenAPI document
(``GET /openapi.json``) that is generated from them.  A field with a default is one the
answer may leave out (``omit_defaults``); ``forbid_unknown_fields`` makes the document say
``additionalProperties: false``, so a handler that grows a field without its Struct here
fails the schemathesis conformance run.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tide.api.jobs import JobState

__all__ = [
    "ColdStartReport",
    "ColdStartStageReport",
    "EndpointHealth",
    "ErrorBody",
    "HealthJobs",
    "HealthWorkers",
    "JobRef",
    "JobStatus",
    "JobsToStop",
    "Ok",
    "PurgeAnswer",
    "Readiness",
    "StreamAnswer",
    "TakenJob",
    "WorkerAnswer",
]


class _Answer(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    pass


class ErrorBody(_Answer, frozen=True, kw_only=True):
    """Every 4xx and 5xx: what went wrong and what to do about it."""

    error: str


class Ok(_Answer, frozen=True, kw_only=True):
    ok: bool


class Readiness(_Answer, frozen=True, kw_only=True, omit_defaults=True):
    """/readyz: 200 with the view's store revision once loaded, 503 with ``error`` before."""

    ready: bool
    revision: int = 0
    error: str = ""


class ColdStartStageReport(_Answer, frozen=True, kw_only=True, omit_defaults=True):
    stage: str
    ms: float
    tier: str = ""  # weight_restore: the nearest tier that held the weights


class ColdStartReport(_Answer, frozen=True, kw_only=True):
    """What a fresh worker's first job waited on (milliseconds)."""

    worker_id: str
    node_id: str
    job_id: str
    finished_at: float
    total_ms: float
    stages: list[ColdStartStageReport]
    weight_tier: str
    weight_bytes: int
    complete: bool
    path: str = "fresh"  # "fresh" (a new process) or "resume" (a suspended worker thawed in place)
    reason: str = ""  # a resume that fell back to a fresh start: why


class JobRef(_Answer, frozen=True, kw_only=True):
    """/run, /cancel, /retry: the job and the state it is in now."""

    id: str
    status: JobState


class JobStatus(_Answer, frozen=True, kw_only=True, omit_defaults=True):
    """The /status object (RunPod §2.4); /runsync and /status-sync answer it too."""

    id: str
    status: JobState
    delay_time: int = 0  # ms from submission to a worker's take
    execution_time: int = 0  # ms from the take to the result
    worker_id: str = ""
    retries: int = 0
    output: Any = None
    error: Any = None
    cold_start: ColdStartReport | None = None


class StreamAnswer(_Answer, frozen=True, kw_only=True):
    id: str
    status: JobState
    stream: list[Any]  # the chunks not delivered before, oldest first


class PurgeAnswer(_Answer, frozen=True, kw_only=True):
    removed: int
    status: Literal["completed"]


class HealthJobs(_Answer, frozen=True, kw_only=True):
    completed: int
    failed: int
    in_progress: int
    in_queue: int
    retried: int


class HealthWorkers(_Answer, frozen=True, kw_only=True):
    idle: int
    initializing: int
    ready: int
    running: int
    throttled: int
    unhealthy: int


class EndpointHealth(_Answer, frozen=True, kw_only=True, omit_defaults=True):
    jobs: HealthJobs
    workers: HealthWorkers
    reason: str = ""  # Tide's addition: why queued jobs wait for a worker


class TakenJob(_Answer, frozen=True, kw_only=True, omit_defaults=True):
    """One job as job-take hands it to a worker (RunPod §1)."""

    id: str
    input: Any
    webhook: str = ""
    s3_config: dict[str, Any] | None = None
    batch_id: str = ""


class WorkerAnswer(_Answer, frozen=True, kw_only=True, omit_defaults=True):
    """job-done and job-stream: ``accepted``, or ``ignored`` with why (the job moved on)."""

    accepted: bool = False
    ignored: str = ""


class JobsToStop(_Answer, frozen=True, kw_only=True):
    jobs_to_stop: list[str]
