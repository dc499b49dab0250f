"""Schemathesis against ``tide dev``: every operation of the generated OpenAPI document, fuzzed
(valid and invalid input, derandomized, a bounded number of examples each), answers no 5xx and
only what the document says (status, content type, body schema); and the stateful links
run -> status / cancel / stream hold on real jobs.

The document is built in-process (so pytest sees one test per operation at collection);
tests/coordinator/api/test_openapi.py proves the served /openapi.json is the same document.

How each credential kind is presented: admin routes get the admin key, public routes a client
key, worker routes a token minted for the case's own (endpoint, worker).  Three worker routes
(job-take, job-take-batch, job-stop) long-poll 20 s server-side with no client-settable wait,
and the node routes need a token minted from the cluster secret: those get the admin key
instead and are fuzzed through their refusal (401) only; their valid paths run in every e2e
test that starts a worker or a node.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_schema_conformance,
    status_code_conformance,
)

from coordinator.api._openapi import build_document
from coordinator.api._routes_table import ROUTES
from tests.fixtures.cluster import DevClusterProcess
from tests.fixtures.coordinator import REPO_ROOT, http_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ECHO = f"dir://{REPO_ROOT / 'examples' / 'echo'}"
EP, ADMIN_EP = "fuzz", "fuzz-admin"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
_AUTH = {(r.method, r.path): r.auth for r in ROUTES}
_LONG_POLLS = {"getJobTake", "getJobTakeBatch", "getJobStop"}

# Code bundles are uploaded as raw tar bytes: sent as schemathesis sends any binary body.
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
schema = schemathesis.openapi.from_dict(build_document())


class Target:
    """The running ``tide dev`` and the credentials each case presents."""

    def __init__(self, proc: DevClusterProcess) -> None:
        self.proc = proc
        self.url = proc.url
        self.admin_key = proc.api_key
        self.client_key = str(proc.admin.create_key(f"fuzz-{uuid.uuid4().hex[:6]}")["key"])
        self._tokens: dict[tuple[str, str], str] = {}
        self.seen: Counter[tuple[str, int]] = Counter()  # (operation, status): printed at the end
        self._lock = threading.Lock()
        for name in (EP, ADMIN_EP):
            self.create_endpoint(name)

    def create_endpoint(self, name: str) -> None:
        body = {"name": name, "image": ECHO, "workersMax": 1, "idleTimeout": 30}
        code, answer = http_json("POST", f"{self.url}/admin/v1/endpoints", body, key=self.admin_key)
        assert code in (201, 409), answer

    def worker_token(self, ep: str, worker: str) -> str:
        with self._lock:
            if (ep, worker) not in self._tokens:
                path = f"/admin/v1/endpoints/{quote(ep, safe='')}/workers/{quote(worker, safe='')}/token"
                code, answer = http_json("POST", self.url + path, key=self.admin_key)
                self._tokens[ep, worker] = str(answer["token"]) if code == 200 else self.admin_key
            return self._tokens[ep, worker]

    def prepare(self, case: Any) -> dict[str, str]:
        """Point most cases at a real endpoint, keep long polls short; the headers to send."""
        params = case.path_parameters or {}
        auth = _AUTH[case.operation.method.upper(), case.operation.path]
        ep = params.get("ep")
        # One case in four keeps its generated endpoint name: the unknown-endpoint paths.
        if isinstance(ep, str) and len(ep) % 4:
            params["ep"] = ADMIN_EP if auth in ("admin", "viewer") else EP
        _short_waits(case)
        key = {"client": self.client_key, "worker": self.admin_key}.get(auth, self.admin_key)
        worker, ep = params.get("worker"), params.get("ep")
        polls = case.operation.definition.raw.get("operationId") in _LONG_POLLS
        if auth == "worker" and not polls and isinstance(worker, str) and isinstance(ep, str):
            key = self.worker_token(ep, worker)
        return {"Authorization": f"Bearer {key}"}

    def after(self, case: Any, status: int, body: Any) -> None:
        """Keep the cluster as the next cases expect it."""
        op = case.operation.definition.raw.get("operationId")
        self.seen[op, status] += 1
        if op == "createEndpoint" and status == 201:  # fuzzed specs must not hold the GPUs
            http_json(
                "DELETE", f"{self.url}/admin/v1/endpoints/{quote(body['id'], safe='')}", key=self.admin_key
            )
        if op == "deleteEndpoint" and status == 200:
            self.create_endpoint(str(body["id"]))


def _short_waits(case: Any) -> None:
    """Cap ``wait`` (a generated 299999 ms would hold a worker of the run for 5 minutes)."""
    op = case.operation.definition.raw.get("operationId", "")
    ceiling = {"postRunsync": 1000, "nodeDesired": 1}.get(op, 500)
    floor = 1000 if op == "postRunsync" else 0
    wait = case.query.get("wait")
    try:
        value = int(wait) if not isinstance(wait, (bool, float)) else None
    except (TypeError, ValueError):
        value = None  # not an integer: the coordinator answers 400 at once
    if value is not None:
        case.query["wait"] = max(min(value, ceiling), floor)
    elif wait is None and op in ("postRunsync", "getStatusSync", "postStatusSync", "nodeDesired"):
        case.query["wait"] = ceiling  # their default waits are 90 s (desired: 25 s)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    proc = DevClusterProcess(nodes=1, gpus="2xH100-80GB", claim_grace_s=3.0, lost_after_s=5.0)
    try:
        proc.start()
        target = Target(proc)
        yield target
        print("\nanswers by operation:", sorted(target.seen.items()))
        log = proc.log_tail(2_000_000)
        assert "unhandled error" not in log, log[-8000:]
    finally:
        proc.cleanup()


@schema.parametrize()
@FUZZ
def test_every_operation_answers_only_what_the_document_says(case: Any, target: Target) -> None:
    headers = target.prepare(case)
    response = case.call(base_url=target.url, headers=headers, timeout=30)
    case.validate_response(response, checks=CHECKS, headers=headers)
    try:
        body = response.json()
    except ValueError:
        body = None
    target.after(case, response.status_code, body)


def test_run_status_cancel_links(target: Target) -> None:
    """Stateful: a real job from /run (or /runsync), then the operations its links name."""
    links = schema.include(operation_id=["postRun", "postRunsync", "getStatus", "postCancel", "getStream"])
    base = links.as_state_machine()

    class Jobs(base):  # type: ignore[misc,valid-type]
        def before_call(self, case: Any) -> None:
            if case.path_parameters is not None:
                case.path_parameters["ep"] = EP  # links carry it on: $request.path.ep
            _short_waits(case)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {
                "base_url": target.url,
                "headers": {"Authorization": f"Bearer {target.client_key}"},
                "timeout": 30,
            }

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            target.seen[f"links:{case.operation.definition.raw['operationId']}", response.status_code] += 1

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(
                response, checks=[*CHECKS, ensure_resource_availability], headers=kwargs.get("headers")
            )

    Jobs.run(settings=settings(FUZZ, max_examples=15, stateful_step_count=6))
