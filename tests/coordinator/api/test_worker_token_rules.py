"""When a worker token is valid, against a view set by hand (the HTTP side is in
test_identities.py and test_authz_matrix.py): while its worker is assigned; for
``REMOVED_GRACE_S`` after a scale-down, and for as long as the worker holds a claim on a job
of the endpoint, so a worker being stopped can finish; never once its endpoint is re-created
or a hand-made token's expiry has passed."""

from __future__ import annotations

import time

import pytest
from aiohttp.test_utils import make_mocked_request

from coordinator._node_schema import WorkerAssignment
from coordinator._schema import Claim
from coordinator.api._auth import REMOVED_GRACE_S, Auth
from coordinator.api._tokens import generation, mint_hand_token, mint_worker_token
from coordinator.store import MemoryStore
from coordinator.view import ClusterView
from tide.api.endpoints import Endpoint, EndpointSpec
from tide.api.errors import Unauthenticated

SECRET = b"s" * 32


def _view(created_at: float = 100.0) -> tuple[ClusterView, Auth]:
    store = MemoryStore()
    view = ClusterView(store)
    view.endpoints["ep"] = (
        Endpoint(id="ep", spec=EndpointSpec(name="ep", image="i"), created_at=created_at),
        1,
    )
    view.assignments["w1"] = WorkerAssignment(worker_id="w1", endpoint_id="ep", node_id="n")
    return view, Auth(view, admin_key_hashes=[], cluster_secret=SECRET, store=store)


async def _check(auth: Auth, token: str, worker: str = "w1") -> None:
    request = make_mocked_request("GET", f"/v2/ep/ping/{worker}", headers={"Authorization": token})
    await auth.require_worker(request, "ep", worker)


async def test_a_removed_worker_may_finish_then_its_token_ends() -> None:
    view, auth = _view()
    token = auth.worker_token("ep", "w1")
    await _check(auth, token)
    del view.assignments["w1"]
    view.removed_workers["w1"] = 7
    view.removed_at["w1"] = time.monotonic()
    await _check(auth, token)  # scaled down a moment ago: its last calls go through
    view.removed_at["w1"] = time.monotonic() - REMOVED_GRACE_S - 1
    with pytest.raises(Unauthenticated, match="no longer assigned"):
        await _check(auth, token)
    view.claims["j1"] = (Claim(endpoint_id="ep", worker_id="w1", deadline=0, exec_deadline=0), 3, 0)
    await _check(auth, token)  # a long job it still holds: its job-done is wanted
    del view.claims["j1"]
    with pytest.raises(Unauthenticated):
        await _check(auth, token)


async def test_a_token_names_its_endpoints_generation_and_worker() -> None:
    view, auth = _view(created_at=100.0)
    old = mint_worker_token(SECRET, "ep", generation(99.0), "w1")  # the endpoint before a re-create
    with pytest.raises(Unauthenticated, match="deleted"):
        await _check(auth, old)
    with pytest.raises(Unauthenticated, match="not valid for worker 'w2'"):
        await _check(auth, auth.worker_token("ep", "w1"), worker="w2")
    with pytest.raises(Unauthenticated):
        await _check(auth, "tw1.anything")  # the old unbound format
    view.assignments["w2"] = WorkerAssignment(worker_id="w2", endpoint_id="other", node_id="n")
    with pytest.raises(Unauthenticated, match="no longer assigned"):  # waits out the view lag once
        await _check(auth, auth.worker_token("ep", "w2"), worker="w2")


async def test_a_hand_token_needs_no_assignment_but_expires() -> None:
    _, auth = _view()
    token, expires = auth.hand_token("ep", "w-laptop", 3600)
    assert expires > time.time()
    await _check(auth, token, worker="w-laptop")
    gen = generation(100.0)
    stale = mint_hand_token(SECRET, "ep", gen, "w-laptop", int(time.time()) - 1)
    with pytest.raises(Unauthenticated, match="expired"):
        await _check(auth, stale, worker="w-laptop")
    forged = token.rsplit(".", 1)[0] + ".AAAA"
    with pytest.raises(Unauthenticated, match="not valid"):
        await _check(auth, forged, worker="w-laptop")
