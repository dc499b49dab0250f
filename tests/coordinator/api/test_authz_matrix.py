"""The authorization table, proven over HTTP: every route of the route table x every kind
of credential (and none) against one running coordinator, checked against
``coordinator/api/_authz.py``'s ``ADMITS``.  A route added without its row fails
tests/coordinator/api/test_openapi.py; a row whose check is wrong fails here.

"Allowed" means the answer is not 401/403 (a 400, 404 or 409 comes from the handler, after
the credential was taken); "refused" means 401 or 403.  Requests carry no body or an empty
one, so allowed mutations stop at their handler's 400, and destructive routes name objects
that do not exist (their 404 is an allowed answer).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from coordinator.api._authz import ADMITS, CREDENTIALS
from coordinator.api._route_doc import RouteDoc
from coordinator.api._routes_table import ROUTES
from tests.fixtures.coordinator import CoordinatorProcess, http_json

pytestmark = pytest.mark.timeout(120)

EP, WORKER, NODE = "mx", "mx-w", "mx-node"
_PARAMS = {
    "ep": EP,
    "worker": WORKER,
    "node": NODE,
    "job": "no-such-job",
    "gpu": "GPU-none",
    "key": "nokey",
    "sha": "0" * 64,
    "asset": "console.js",
    "batch": "batch_none",
    "request": "req_none_0",
}
# Destructive rows name what does not exist: allowed is their 404.
_GONE = {"ep": "mx-gone", "node": "mx-gone-node", "key": "nokey"}


@dataclass
class Cluster:
    proc: CoordinatorProcess
    creds: dict[str, str]  # credential kind -> the secret to present ("" = none)
    fresh: int = 0

    def host(self) -> str:
        self.fresh += 1
        return f"mx-new-{self.fresh}"


def _register(url: str, key: str, host: str) -> tuple[int, Any]:
    body = {"inventory": {"hostname": host, "gpus": []}}
    return http_json("POST", url + "/node/v1/register", body, key=key)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    proc = CoordinatorProcess(store_url="memory://", take_wait_s=0.2)
    try:
        proc.start()
        adm = proc.admin
        adm.create_endpoint(EP)
        code, reg = _register(proc.url, proc.admin_key, NODE)
        assert code == 200, reg
        creds = {
            "admin": proc.admin_key,
            "client": adm.create_key("mx-client", endpointIds=[EP])["key"],
            "viewer": adm.create_key("mx-viewer", scope="viewer")["key"],
            "node-join": adm.create_key("mx-join", scope="node")["key"],
            "node": reg["token"],
            "worker": adm.worker_token(EP, WORKER),
            "none": "",
        }
        yield Cluster(proc, creds)
    finally:
        proc.cleanup()


def _path(row: RouteDoc) -> str:
    # A client's DELETE (a batch request) stays on its own endpoint: the batch does not exist.
    gone = row.method == "DELETE" and row.auth != "client"
    params = {**_PARAMS, **(_GONE if gone else {})}
    path = row.path.format(**params)
    if row.op_id in ("nodeDesired", "getStreamSync", "postStatusSync", "getStatusSync"):
        path += "?wait=0"
    return path


def _send(c: Cluster, row: RouteDoc, cred: str) -> int:
    """The status ``row`` answers to ``cred``; a long poll still open after 2 s was let in."""
    body: Any = None
    if row.op_id == "registerNode":  # its own host for a node token, a new one for the rest
        host = NODE if cred == "node" else c.host()
        body = {"inventory": {"hostname": host, "gpus": []}}
    headers = {"Content-Type": "application/json"}
    if c.creds[cred]:
        headers["Authorization"] = f"Bearer {c.creds[cred]}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(c.proc.url + _path(row), data=data, method=row.method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=2.0) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except TimeoutError:
        return 0  # job-stop's 20 s long poll: a refusal would have come at once


def test_every_route_admits_exactly_the_credentials_its_row_names(cluster: Cluster) -> None:
    wrong = []
    for row in ROUTES:
        for cred in (*CREDENTIALS, "none"):
            status = _send(cluster, row, cred)
            allowed = status not in (401, 403)
            expected = row.auth == "none" or cred in ADMITS[row.auth]
            if allowed != expected:
                wrong.append(f"{row.method} {row.path} [{row.auth}] with {cred}: {status}")
    assert not wrong, "\n".join(wrong)


def test_every_auth_kind_of_the_table_is_walked() -> None:
    assert {r.auth for r in ROUTES} == set(ADMITS)


def test_a_node_key_is_no_client_key(cluster: Cluster) -> None:
    """issue 12, serious 1: a node-scoped key answered 200 on every endpoint's /v2 routes."""
    url = cluster.proc.url
    for cred in ("node-join", "viewer"):
        code, out = http_json("POST", f"{url}/v2/{EP}/run", {"input": {}}, key=cluster.creds[cred])
        assert code == 403 and "scope" in out["error"], out
        code, out = http_json("GET", f"{url}/v2/{EP}/status/x", key=cluster.creds[cred])
        assert code == 403, out


def test_api_key_in_the_query_only_on_admin_routes(cluster: Cluster) -> None:
    url, client = cluster.proc.url, cluster.creds["client"]
    code, out = http_json("POST", f"{url}/v2/{EP}/run?api_key={client}", {"input": {}})
    assert code == 401 and "Authorization: Bearer" in out["error"], out
    code, out = http_json("GET", f"{url}/admin/v1/endpoints?api_key={cluster.creds['viewer']}")
    assert code == 200, out


def test_metrics_take_a_viewer_or_admin_key(cluster: Cluster) -> None:
    url = cluster.proc.url
    assert http_json("GET", url + "/metrics")[0] == 401
    assert http_json("GET", url + "/metrics", key=cluster.creds["client"])[0] == 403
    code, text = http_json("GET", url + "/metrics", key=cluster.creds["viewer"])
    assert code == 200 and "tide_" in text
