"""What the coordinator stores in etcd: key layout and value types.

Key layout (all under ``/tide/``)::

    endpoints/<ep>                 Endpoint
    apikeys/<sha256 of secret>     ApiKey
    secret                         the cluster's HMAC secret for worker tokens
    jobs/<ep>/<job>                JobRecord            (lease: TTL / retention bucket)
    queue/<ep>/<prio><seq>         job id               (same lease as the job)
    claims/<job>                   Claim                (an in-progress job's lease)
    stream/<job>/<seq>             one chunk's JSON     (same lease as the job)
    stops/<worker>/<job>           b""                  (job-stop signals; short lease)
    outbox/<job>                   WebhookDelivery      (webhooks to send)
    presence/<ep>/<worker>         Presence             (short lease, renewed by pings)
    retired/<ep>/<worker>          Retirement           (stopPod: recycle this worker; 1 h lease)

Stored types follow msgspec's schema-evolution rules: new fields get
defaults, no field changes type.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tide.api.jobs import JobState

__all__ = [
    "Claim",
    "JobRecord",
    "Presence",
    "Retirement",
    "WebhookDelivery",
    "decode_claim",
    "decode_job",
    "encode",
    "keys",
]

encode = msgspec.json.Encoder().encode


class JobRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    endpoint_id: str
    status: JobState
    created_at: float  # unix seconds
    input: Any = None
    input_blob: str = ""  # blob key when the input is above the inline threshold
    webhook: str = ""
    s3_config: dict[str, Any] | None = None
    low_priority: bool = False
    execution_timeout_ms: int = 600_000
    ttl_ms: int = 86_400_000
    sync: bool = False  # submitted with /runsync: shorter result retention
    seq: str = ""  # queue position (sortable)
    started_at: float = 0.0
    finished_at: float = 0.0
    worker_id: str = ""
    lost_by: str = ""  # the worker whose lapsed claim requeued it: its late job-done is still taken
    retries: int = 0
    output: Any = None
    output_blob: str = ""
    has_output: bool = False
    error: Any = None
    batch_id: str = ""


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """An in-progress job's lease: requeued when ``deadline`` passes unrenewed."""

    endpoint_id: str
    worker_id: str
    deadline: float  # unix seconds; renewed by the worker's pings
    exec_deadline: float  # started_at + execution timeout


class WebhookDelivery(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    endpoint_id: str
    attempts: int = 0
    next_at: float = 0.0


class Presence(msgspec.Struct, frozen=True, kw_only=True):
    endpoint_id: str
    worker_id: str
    last_seen: float
    jobs: list[str] = []
    unhealthy: str = ""  # a fitness check's reason


class Retirement(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A worker that asked to be recycled (``stopPod``): stop it, start a fresh one if wanted."""

    endpoint_id: str
    worker_id: str
    job_id: str
    at: float


_job_decoder = msgspec.json.Decoder(JobRecord)
_claim_decoder = msgspec.json.Decoder(Claim)


def decode_job(raw: bytes) -> JobRecord:
    return _job_decoder.decode(raw)


def decode_claim(raw: bytes) -> Claim:
    return _claim_decoder.decode(raw)


class keys:
    ROOT = b"/tide/"
    ENDPOINTS = b"/tide/endpoints/"
    APIKEYS = b"/tide/apikeys/"
    SECRET = b"/tide/secret"
    SECRET_CHECK = b"/tide/secret-check"  # HMAC(token secret, constant): do replicas agree?
    JOBS = b"/tide/jobs/"
    QUEUE = b"/tide/queue/"
    CLAIMS = b"/tide/claims/"
    STREAM = b"/tide/stream/"
    STOPS = b"/tide/stops/"
    OUTBOX = b"/tide/outbox/"
    PRESENCE = b"/tide/presence/"
    RETIRED = b"/tide/retired/"
    TEMPLATES = b"/tide/templates/"  # RunPod templates (GraphQL saveTemplate)

    @staticmethod
    def endpoint(ep: str) -> bytes:
        return b"/tide/endpoints/" + ep.encode()

    @staticmethod
    def template(template_id: str) -> bytes:
        return b"/tide/templates/" + template_id.encode()

    @staticmethod
    def apikey(sha256: str) -> bytes:
        return b"/tide/apikeys/" + sha256.encode()

    @staticmethod
    def job(ep: str, job: str) -> bytes:
        return f"/tide/jobs/{ep}/{job}".encode()

    @staticmethod
    def jobs_of(ep: str) -> bytes:
        return f"/tide/jobs/{ep}/".encode()

    @staticmethod
    def queue(ep: str, low_priority: bool, seq: str) -> bytes:
        return f"/tide/queue/{ep}/{1 if low_priority else 0}{seq}".encode()

    @staticmethod
    def queue_of(ep: str) -> bytes:
        return f"/tide/queue/{ep}/".encode()

    @staticmethod
    def claim(job: str) -> bytes:
        return b"/tide/claims/" + job.encode()

    @staticmethod
    def stream(job: str, seq: str = "") -> bytes:
        return f"/tide/stream/{job}/{seq}".encode()

    @staticmethod
    def stop(worker: str, job: str = "") -> bytes:
        return f"/tide/stops/{worker}/{job}".encode()

    @staticmethod
    def outbox(job: str) -> bytes:
        return b"/tide/outbox/" + job.encode()

    @staticmethod
    def presence(ep: str, worker: str = "") -> bytes:
        return f"/tide/presence/{ep}/{worker}".encode()

    @staticmethod
    def retired(ep: str, worker: str = "") -> bytes:
        return f"/tide/retired/{ep}/{worker}".encode()
