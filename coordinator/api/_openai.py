"""OpenAI-compatible requests and answers, as RunPod's vLLM worker speaks them: pure
functions, no I/O (the routes are ``_openai_routes``).

A request to ``/v2/{ep}/openai/v1/<route>`` becomes a job whose input is
``{"openai_route": "/v1/<route>", "openai_input": <the body>}`` (worker-vllm's
``JobInput``).  The worker is a generator: without ``stream`` it yields the whole OpenAI
object; with it, batches of chunks, as raw SSE text (``RAW_OPENAI_OUTPUT=1``, the
default: ``"data: {...}\\n\\n"`` up to ``"data: [DONE]\\n\\n"``) or as lists of chunk
objects (``RAW_OPENAI_OUTPUT=0``).  Its own errors are vLLM's ``ErrorResponse``, either
yielded as output (``{"object": "error", "message", "type", "code"}``) or, nested
(``{"error": {...}}``), turned by the runpod SDK into a FAILED job whose ``error`` is the
Python ``str()`` of that dict.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Final

import msgspec

from tide.api.errors import InvalidArgument

__all__ = [
    "OPENAI_PATH",
    "ROUTES",
    "answer_of",
    "check_body",
    "error_body",
    "job_input",
    "sse_events",
]

OPENAI_PATH: Final = re.compile(r"^/v2/[^/]+/openai(/|$)")
# The path under /v2/{ep}/openai/v1/ -> the worker's openai_route.
ROUTES: Final = {t: f"/v1/{t}" for t in ("chat/completions", "completions", "embeddings", "models")}
DONE: Final = b"data: [DONE]\n\n"

_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    410: "cancelled",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "timeout_error",
}
_CODES: Final = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
# What each route needs to be routed at all; the worker validates the rest.
_REQUIRED: Final = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input"}
_MAX_ERROR_PARSE: Final = 65_536
_encoder = msgspec.json.Encoder()


def error_body(
    message: str, status: int, *, type_: str = "", code: str | int | None = None
) -> dict[str, Any]:
    kind = type_ or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code or _CODES.get(status)}}


def check_body(route: str, body: Any) -> dict[str, Any]:
    """The body of a POST to ``route``, or ``InvalidArgument`` saying what to fix."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"the body of /openai/v1/{route} must be a JSON object (OpenAI's request)")
    field = _REQUIRED[route]
    value = body.get(field)
    if field == "messages" and (not isinstance(value, list) or not value):
        raise InvalidArgument(f"'messages' is required by /openai/v1/{route} and must be a non-empty array")
    if field != "messages" and not isinstance(value, str | list):
        raise InvalidArgument(f"'{field}' is required by /openai/v1/{route} and must be a string or an array")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidArgument("'stream' must be true or false")
    if stream and route == "embeddings":
        raise InvalidArgument("/openai/v1/embeddings does not stream; leave 'stream' out")
    if "model" in body and not isinstance(body["model"], str):
        raise InvalidArgument("'model' must be a string")
    return body


def job_input(route: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"openai_route": ROUTES[route], "openai_input": body}


def worker_error(value: Any) -> tuple[int, dict[str, Any]] | None:
    """vLLM's ErrorResponse in either shape, as (HTTP status, OpenAI error body)."""
    if not isinstance(value, dict):
        return None
    info = value.get("error") if isinstance(value.get("error"), dict) else None
    if info is None and value.get("object") == "error":
        info = value
    if info is None or not isinstance(info.get("message"), str):
        return None
    code = info.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 400
    type_ = info.get("type") if isinstance(info.get("type"), str) else ""
    body = error_body(
        info["message"], status, type_=type_, code=code if isinstance(code, str | int) else None
    )
    if isinstance(info.get("param"), str):
        body["error"]["param"] = info["param"]
    return status, body


def _parse_error_text(text: str) -> Any:
    """A FAILED job's ``error``: JSON (the runpod SDK's exception report) or the Python
    ``str()`` of a dict (a yielded ``{"error": {...}}``); else the text itself."""
    if len(text) > _MAX_ERROR_PARSE or not text.lstrip().startswith("{"):
        return text
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        pass
    try:
        return ast.literal_eval(text)  # literals only: never runs code
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def failed(envelope: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The OpenAI error of a job that did not complete."""
    job, state = envelope["id"], envelope["status"]
    if state == "TIMED_OUT":
        return 504, error_body(f"job {job} timed out (the endpoint's executionTimeout)", 504)
    if state == "CANCELLED":
        return 410, error_body(f"job {job} was cancelled (POST /cancel or /purge-queue)", 410)
    parsed = _parse_error_text(str(envelope.get("error") or "the worker reported no reason"))
    if (found := worker_error(parsed if not isinstance(parsed, dict) else {"error": parsed})) is not None:
        return found
    if isinstance(parsed, dict) and "error_message" in parsed:  # the runpod SDK's exception report
        parsed = f"the handler raised {parsed.get('error_type', 'an error')}: {parsed['error_message']}"
    return 500, error_body(f"job {job} failed: {parsed}", 500)


def _single(value: Any) -> Any:
    """A non-streamed answer: the handler's return value, or the only value it yielded
    (``return_aggregate_stream`` makes the output the list of yields)."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def answer_of(envelope: dict[str, Any], chunks: list[Any]) -> tuple[int, Any]:
    """(HTTP status, body) of a non-streamed request once its job is final; ``chunks`` are
    its stream chunks (``{"output": v}``), read when the job's output is empty."""
    if envelope["status"] != "COMPLETED":
        return failed(envelope)
    value = _single(envelope.get("output"))
    if value in (None, []) and chunks:
        value = _single([c.get("output") if isinstance(c, dict) else c for c in chunks])
    if (found := worker_error(value)) is not None:
        return found
    if not isinstance(value, dict):
        what = type(value).__name__ if value is not None else "no output"
        return 502, error_body(
            f"the worker answered {what}, not an OpenAI object (job {envelope['id']})", 502
        )
    return 200, value


def sse_events(value: Any) -> tuple[list[bytes], bool]:
    """One yielded value of a streaming worker as SSE events, and whether they end the stream
    (``[DONE]`` or an error event)."""
    if isinstance(value, str):  # raw SSE text from the worker: passed through untouched
        text = value if value.endswith("\n\n") else value + "\n\n"
        return [text.encode()], "data: [DONE]" in text
    if isinstance(value, list):
        events: list[bytes] = []
        for item in value:
            more, done = sse_events(item)
            events += more
            if done:
                return events, True
        return events, False
    if (found := worker_error(value)) is not None:
        return [b"data: " + _encoder.encode(found[1]) + b"\n\n"], True
    if value is None:
        return [], False
    return [b"data: " + _encoder.encode(value) + b"\n\n"], False
