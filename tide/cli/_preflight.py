"""The canary of ``tide deploy``: one worker of the new version must pass before traffic moves.

The canary is a temporary endpoint ``<endpoint>.canary`` with the new spec and exactly one
worker.  It gets one job, ``{"tide.preflight": true}``: the worker loop answers it after the
import (and the decorator's ``preflight=`` call, if any) succeeded, or fails it with the stage and
the traceback.  A worker that never starts (the bundle cannot be fetched, the dependencies cannot
be installed) is seen in its state.  The canary endpoint is deleted either way.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tide.cli._client import AdminClient
from tide.cli._context import seg
from tide.cli._errors import CliError

__all__ = ["Preflight", "run_preflight"]

_FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


class Preflight(msgspec.Struct, kw_only=True):
    ok: bool
    stage: str  # import | call | start | timeout
    seconds: float
    error: str = ""
    log_tail: list[str] = []


def _worker_trouble(client: AdminClient, canary: str) -> tuple[str, str]:
    """(worker id, why it cannot start) of the canary's worker, if it says so."""
    for w in client.get("/admin/v1/workers"):
        if w.get("endpointId") == canary and "could not start" in str(w.get("reason", "")):
            return str(w["workerId"]), str(w["reason"])
    return "", ""


def _log_tail(client: AdminClient, canary: str) -> list[str]:
    try:
        for w in client.get("/admin/v1/workers"):
            if w.get("endpointId") == canary:
                lines = client.get(f"/admin/v1/workers/{seg(w['workerId'])}/logs", tail=20).get("lines", [])
                return [str(line) for line in lines]
    except CliError:
        pass  # the log is a courtesy; the verdict stands without it
    return []


def _wait(client: AdminClient, canary: str, job: str, deadline: float) -> tuple[str, dict[str, Any]]:
    """("done", status) once the job is final; ("start", {"error"}) when the worker cannot start."""
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/v2/{seg(canary)}/status/{seg(job)}")
        if status.get("status") in _FINAL:
            return "done", status
        _, why = _worker_trouble(client, canary)
        if why:
            return "start", {"error": why}
        time.sleep(0.3)
    return "timeout", {"error": "no answer from the canary in time (raise --preflight-timeout)"}


def _verdict(kind: str, status: dict[str, Any]) -> tuple[bool, str, str]:
    if kind != "done":
        return False, kind, str(status.get("error", ""))
    if status.get("status") == "COMPLETED":
        out = status.get("output") or {}
        return True, str(out.get("stage", "import")) if isinstance(out, dict) else "import", ""
    error = str(status.get("error") or status.get("status"))
    return False, "call" if error.startswith("pre-flight call") else "import", error


def run_preflight(client: AdminClient, spec: dict[str, Any], *, timeout_s: float) -> Preflight:
    canary = spec["name"] + ".canary"
    body = {**spec, "name": canary, "workersMin": 1, "workersMax": 1, "flashboot": False}
    t0 = time.monotonic()
    try:
        client.delete(f"/admin/v1/endpoints/{seg(canary)}")  # a canary left by an interrupted deploy
    except CliError as e:
        if e.status != 404:
            raise
    client.post("/admin/v1/endpoints", body)
    try:
        job = client.post(f"/v2/{seg(canary)}/run", {"input": {"tide.preflight": True}})["id"]
        kind, status = _wait(client, canary, str(job), t0 + timeout_s)
        ok, stage, error = _verdict(kind, status)
        tail = [] if ok else _log_tail(client, canary)
    finally:
        client.delete(f"/admin/v1/endpoints/{seg(canary)}")
    return Preflight(ok=ok, stage=stage, seconds=round(time.monotonic() - t0, 2), error=error, log_tail=tail)
