"""Every route the coordinator serves, as data: the source of ``GET /openapi.json``.

A test walks the live router and fails when a route is missing here or listed here but not
served, so the document stays current.  Bodies and answers are msgspec types (tide/api and
the coordinator's own); their JSON Schemas are generated, never written by hand.  HEAD, which
aiohttp adds beside every GET, is not listed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from coordinator._node_schema import NodeRecord
from coordinator.api._route_doc import Q, Raw, RouteDoc
from coordinator.api._routes_table_admin import admin_rows, node_rows
from coordinator.api._routes_table_batch import batch_rows
from tide.api import responses as R
from tide.api.graphql import GraphQLErrors
from tide.api.jobs import JobRequest
from tide.api.openai import OpenAIError

__all__ = ["NODE_RECORD", "ROUTES"]

NODE_RECORD = NodeRecord  # /admin/v1/nodes answers it camelCased, plus heartbeatAgeS (_openapi)

_WAIT = "how long to wait for a final state, in ms"
_JOB_LINKS = {
    f"{verb}{op.title()}": {
        "operationId": f"{verb}{op.title()}",
        "parameters": {"ep": "$request.path.ep", "job": "$response.body#/id"},
    }
    for verb, op in (("get", "status"), ("post", "cancel"), ("get", "stream"))
}


def _public() -> list[RouteDoc]:
    job = "/v2/{ep}/{op}/{job}"
    out = [
        RouteDoc(
            "POST",
            "/v2/{ep}/run",
            "client",
            "postRun",
            "Queue a job",
            {200: R.JobRef},
            JobRequest,
            errors=(400, 413, 429),
            links=_JOB_LINKS,
        ),
        RouteDoc(
            "POST",
            "/v2/{ep}/runsync",
            "client",
            "postRunsync",
            "Run a job and wait for it",
            {200: R.JobStatus},
            JobRequest,
            (Q("wait", _WAIT, 1000, 300_000),),
            (400, 413, 429),
            links=_JOB_LINKS,
        ),
    ]
    for verb in ("GET", "POST"):
        v = verb.lower()
        out += [
            RouteDoc(
                verb,
                job.replace("{op}", "status"),
                "client",
                f"{v}Status",
                "A job's status",
                {200: R.JobStatus},
                errors=(429,),
            ),
            RouteDoc(
                verb,
                job.replace("{op}", "status-sync"),
                "client",
                f"{v}StatusSync",
                "A job's status once final (or after wait)",
                {200: R.JobStatus},
                query=(Q("wait", _WAIT, 0, 300_000),),
                errors=(400, 429),
            ),
            RouteDoc(
                verb,
                job.replace("{op}", "stream"),
                "client",
                f"{v}Stream",
                "A job's stream chunks not read before",
                {200: R.StreamAnswer},
                query=(Q("wait", "how long to wait for a chunk, in ms", 0, 300_000),),
                errors=(400, 429),
            ),
        ]
    return [
        *out,
        RouteDoc(
            "POST",
            job.replace("{op}", "cancel"),
            "client",
            "postCancel",
            "Cancel a job",
            {200: R.JobRef},
            errors=(409, 429),
        ),
        RouteDoc(
            "POST",
            job.replace("{op}", "retry"),
            "client",
            "postRetry",
            "Retry a failed job",
            {200: R.JobRef},
            errors=(409,),
        ),
        RouteDoc(
            "POST",
            "/v2/{ep}/purge-queue",
            "client",
            "postPurgeQueue",
            "Cancel every queued job",
            {200: R.PurgeAnswer},
            errors=(429,),
        ),
        RouteDoc(
            "GET", "/v2/{ep}/health", "client", "getHealth", "Job and worker counts", {200: R.EndpointHealth}
        ),
    ]


_BATCH = Q("batch_size", "most jobs to take", 1, 1024)
_PING = (
    Q("job_id", "comma-separated ids of the jobs the worker runs"),
    Q("status", "'unhealthy' when a fitness check failed"),
    Q("check", "the fitness check that failed"),
    Q("reason", "why it failed"),
)
_ANY_JSON = Raw({"description": "the handler's result, any JSON"})


def _worker() -> list[RouteDoc]:
    w = "/v2/{ep}/{op}/{worker}"
    return [
        RouteDoc(
            "POST",
            w.replace("{op}", "job-done") + "/{job}",
            "worker",
            "postJobDone",
            "A worker's result (or progress) for a job it holds",
            {200: R.WorkerAnswer},
            _ANY_JSON,
            (Q("isStream", "'true' when the result ends a stream"),),
            (400, 404, 409, 413),
        ),
        RouteDoc(
            "GET",
            w.replace("{op}", "job-take-batch"),
            "worker",
            "getJobTakeBatch",
            "Long-poll for up to batch_size jobs; 204 when none came",
            {200: list[R.TakenJob], 204: None},
            query=(_BATCH,),
            errors=(400,),
        ),
        RouteDoc(
            "GET",
            w.replace("{op}", "job-take"),
            "worker",
            "getJobTake",
            "Long-poll for a job; 204 when none came",
            {200: R.TakenJob, 204: None},
        ),
        RouteDoc(
            "POST",
            w.replace("{op}", "job-stream") + "/{job}",
            "worker",
            "postJobStream",
            "Stream chunks of a job the worker holds",
            {200: R.WorkerAnswer},
            _ANY_JSON,
            errors=(400, 404, 409, 413),
        ),
        RouteDoc(
            "GET",
            w.replace("{op}", "ping"),
            "worker",
            "getPing",
            "The worker is alive",
            {200: R.Ok},
            query=_PING,
        ),
        RouteDoc(
            "GET",
            w.replace("{op}", "job-stop"),
            "worker",
            "getJobStop",
            "Long-poll for jobs to stop; 204 when none",
            {200: R.JobsToStop, 204: None},
        ),
    ]


def _ops() -> list[RouteDoc]:
    text = Raw({"type": "string"}, content_type="text/plain")
    return [
        RouteDoc("GET", "/healthz", "none", "healthz", "The process answers", {200: R.Ok}),
        RouteDoc(
            "GET",
            "/readyz",
            "none",
            "readyz",
            "The store view is loaded",
            {200: R.Readiness, 503: R.Readiness},
        ),
        RouteDoc("GET", "/metrics", "viewer", "metrics", "Prometheus metrics", {200: text}),
        RouteDoc("GET", "/openapi.json", "none", "openapi", "This document", {200: Raw({"type": "object"})}),
    ]


_OPENAI_OBJECT = {"type": "object", "description": "the worker's OpenAI object (vLLM's)"}
_SSE = {
    "type": "object",
    "description": "each Server-Sent Event: data is an OpenAI chunk as JSON, the last 'data: [DONE]'",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}


def _openai_body(required: str, item: dict[str, Any], *, streams: bool = True) -> Raw:
    props: dict[str, Any] = {"model": {"type": "string"}, required: item}
    if streams:
        props["stream"] = {"type": ["boolean", "null"]}
    return Raw({"type": "object", "required": [required], "properties": props})


def _openai() -> list[RouteDoc]:
    """RunPod's OpenAI-compatible routes: each request is a job for the endpoint's worker
    (input ``{"openai_route", "openai_input"}``), OpenAI's error shape throughout."""
    base = "/v2/{ep}/openai/v1"
    answer = Raw(_OPENAI_OBJECT)
    streamed = Raw(_OPENAI_OBJECT, also=(("text/event-stream", _SSE),))
    errors = (400, 410, 413, 429, 500, 502, 504)
    text: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "array"}]}
    rows: list[tuple[str, str, str, str, dict[str, Any]]] = [
        (
            "chat/completions",
            "postOpenaiChat",
            "A chat completion (stream: SSE)",
            "messages",
            {"type": "array", "minItems": 1},
        ),
        ("completions", "postOpenaiCompletion", "A text completion (stream: SSE)", "prompt", text),
        ("embeddings", "postOpenaiEmbeddings", "Embeddings of the input", "input", text),
    ]
    out = [
        RouteDoc(
            "POST",
            f"{base}/{path}",
            "client",
            op_id,
            summary,
            {200: streamed if path != "embeddings" else answer},
            _openai_body(field, item, streams=path != "embeddings"),
            errors=errors,
            error_body=OpenAIError,
        )
        for path, op_id, summary, field, item in rows
    ]
    models = RouteDoc(
        "GET",
        f"{base}/models",
        "client",
        "getOpenaiModels",
        "The worker's models",
        {200: answer},
        errors=errors,
        error_body=OpenAIError,
    )
    return [*out, models]


def _console() -> list[RouteDoc]:
    """The web console's static files: no key (they hold no secret); its data comes from the
    admin API with the key the person signs in with."""
    text: dict[str, Any] = {"type": "string"}
    page = Raw(text, content_type="text/html")
    return [
        RouteDoc("GET", "/console", "none", "console", "The web console's page", {200: page}),
        RouteDoc(
            "GET",
            "/console/{asset}",
            "none",
            "consoleAsset",
            "One of the console's files (index.html, console.css, console.js)",
            {200: Raw(text, content_type="text/html", also=(("text/css", text), ("text/javascript", text)))},
            errors=(404,),
        ),
    ]


_GRAPHQL_BODY = Raw(
    {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {"type": "string"},
            "variables": {"type": ["object", "null"]},
            "operationName": {"type": ["string", "null"]},
        },
    }
)


def _graphql() -> list[RouteDoc]:
    """RunPod's GraphQL management API (the runpod SDK's create_endpoint, get_endpoints, ...):
    queries take a viewer or admin key, mutations an admin key (the handler checks)."""
    answer = Raw({"type": "object", "properties": {"data": {"type": ["object", "null"]}}})
    return [
        RouteDoc(
            "POST",
            "/graphql",
            "viewer",
            "postGraphql",
            "RunPod's management API: endpoints, templates, GPU types (mutations need an admin key)",
            {200: answer},
            _GRAPHQL_BODY,
            errors=(400, 404, 409, 413),
            error_body=GraphQLErrors,
        )
    ]


def _tagged(tag: str, rows: list[RouteDoc]) -> list[RouteDoc]:
    return [r if r.tag else replace(r, tag=tag) for r in rows]


ROUTES: list[RouteDoc] = [
    *_tagged("public", _public()),
    *_tagged("openai", _openai()),
    *_tagged("batch", batch_rows()),
    *_tagged("worker", _worker()),
    *_tagged("admin", admin_rows()),
    *_tagged("admin", node_rows()),
    *_tagged("graphql", _graphql()),
    *_tagged("ops", _ops()),
    *_tagged("console", _console()),
]
