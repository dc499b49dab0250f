"""Jobs: the at-least-once job lifecycle behind the public and worker APIs."""

from coordinator.jobs._blobs import JobBlobs
from coordinator.jobs._bounds import MAX_INLINE_LIMIT, decode_json
from coordinator.jobs._client_ops import JobService
from coordinator.jobs._coldstart import ColdStartRecorder, ColdStartTracker, cold_start_json
from coordinator.jobs._context import JobsContext, JobSettings
from coordinator.jobs._reaper import Reaper, WebhookSender, plan_reap
from coordinator.jobs._webhook_policy import Verdict, WebhookPolicy, check_webhook_url
from coordinator.jobs._worker_ops import WorkerService

__all__ = [
    "MAX_INLINE_LIMIT",
    "ColdStartRecorder",
    "ColdStartTracker",
    "JobBlobs",
    "JobService",
    "JobSettings",
    "JobsContext",
    "Reaper",
    "Verdict",
    "WebhookPolicy",
    "WebhookSender",
    "WorkerService",
    "check_webhook_url",
    "cold_start_json",
    "decode_json",
    "plan_reap",
]
