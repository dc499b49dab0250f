"""ClusterView: each replica's mirror of the small, hot parts of the store.

One watch over ``/tide/`` feeds it: queued job keys per endpoint, in-progress
claims, stop signals, worker presence, endpoints and API keys.  Long-polls and
control loops wait on its signals; a signal only *wakes* a waiter, which then
re-reads the view (level-triggered).  Job records themselves are not
mirrored, only announced to whoever waits on a job id (runsync, status-sync).

The view may lag the store by a watch round trip; every decision taken from
it is confirmed by a transaction that compares revisions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

import msgspec

from coordinator._node_schema import MigLayoutRecord, NodeRecord, WorkerAssignment, nkeys
from coordinator._schema import (
    Claim,
    JobRecord,
    Presence,
    WebhookDelivery,
    decode_claim,
    decode_job,
    keys,
)
from coordinator.store import Compacted, KeyValue, Store, WatchEvent
from coordinator.view._job_stats import JOBSTATS, JobStats
from coordinator.view._queue import Signal, _Queue
from tide.api.endpoints import ApiKey, Endpoint

__all__ = ["ClusterView", "JobFeed"]

log = logging.getLogger("tide.coordinator.view")

_presence_decoder = msgspec.json.Decoder(Presence)
_endpoint_decoder = msgspec.json.Decoder(Endpoint)
_apikey_decoder = msgspec.json.Decoder(ApiKey)
_delivery_decoder = msgspec.json.Decoder(WebhookDelivery)
_node_decoder = msgspec.json.Decoder(NodeRecord)
_assignment_decoder = msgspec.json.Decoder(WorkerAssignment)
_mig_layout_decoder = msgspec.json.Decoder(MigLayoutRecord)
_MIRRORED = (
    nkeys.NODES,
    nkeys.WORKERS,
    nkeys.REASONS,
    nkeys.MIGLAYOUTS,
    nkeys.COLDSTARTS,
    keys.QUEUE,
    keys.CLAIMS,
    keys.OUTBOX,
    keys.RETIRED,
    keys.STOPS,
    keys.PRESENCE,
    keys.ENDPOINTS,
    keys.APIKEYS,
    JOBSTATS,
)

_REMOVED_KEPT = 10_000


class JobFeed(Protocol):
    """A listener to the view's job feed (the cold-start tracker of coordinator/jobs): it hears
    every job record put, every change of an endpoint's cold-start history, and a re-listing."""

    def observe(self, record: JobRecord) -> None: ...

    def apply_history(self, ep: str, value: bytes | None, revision: int, *, replay: bool) -> None: ...

    def relisted(self) -> None: ...


class ClusterView:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._queues: dict[str, _Queue] = defaultdict(_Queue)
        self.claims: dict[str, tuple[Claim, int, int]] = {}  # job id -> (claim, mod_revision, lease)
        self.outbox: dict[str, tuple[WebhookDelivery, int]] = {}  # job id -> (delivery, mod_revision)
        self.retired: set[str] = set()  # workers that asked to be recycled (stopPod)
        self.seen: dict[str, dict[str, float]] = defaultdict(dict)  # ep -> worker -> last take/ping
        self.ready_at: dict[str, float] = {}  # worker -> first take/ping seen here (handler ready)
        # Workers the scheduler removed (their assignment is gone): they get no more jobs and
        # their long-polls end at once, so the SDK's graceful SIGTERM exit is not held up.
        self.removed_workers: dict[str, int] = {}  # worker -> revision of the removal
        self.removed_at: dict[str, float] = {}  # worker -> when this replica saw it removed (monotonic)
        self.stops: dict[str, set[str]] = defaultdict(set)  # worker -> job ids
        self.presence: dict[str, dict[str, Presence]] = defaultdict(dict)
        self.endpoints: dict[str, tuple[Endpoint, int]] = {}
        self.apikeys: dict[str, ApiKey] = {}
        self.job_stats = JobStats()  # /health's counters: stored totals + changes seen since
        self.claims_changed = Signal()
        self.outbox_changed = Signal()
        self.endpoints_changed = Signal()
        self.presence_changed = Signal()
        self._stop_signals: dict[str, Signal] = defaultdict(Signal)
        self._job_waiters: dict[str, list[Callable[[JobRecord | None], None]]] = defaultdict(list)
        self._stream_waiters: dict[str, list[Callable[[], None]]] = {}  # job -> called on a new chunk
        self.nodes: dict[str, tuple[NodeRecord, int]] = {}
        self.assignments: dict[str, WorkerAssignment] = {}  # worker id -> assignment
        self.reasons: dict[str, str] = {}  # endpoint -> why its workers do not fit
        # node -> GPU uuid -> (wanted MIG layout, mod_revision)
        self.mig_layouts: dict[str, dict[str, tuple[MigLayoutRecord, int]]] = defaultdict(dict)
        self.node_revisions: dict[str, int] = defaultdict(int)  # node -> revision of its last desired change
        self._node_signals: dict[str, Signal] = defaultdict(Signal)
        self.cluster_changed = Signal()  # anything the scheduler looks at
        self.ready = asyncio.Event()
        self.closing = False
        self.revision = 0
        self._feeds: list[JobFeed] = []  # told before a job's own waiters (they may ask them)
        self._listing = False

    # -- queries ---------------------------------------------------------
    def queue(self, ep: str) -> _Queue:
        return self._queues[ep]

    def queued_endpoints(self) -> list[str]:
        return [ep for ep, q in self._queues.items() if q.present]

    def stop_signal(self, worker: str) -> Signal:
        return self._stop_signals[worker]

    def claims_of(self, ep: str) -> list[tuple[str, Claim]]:
        return [(job, c) for job, (c, _, _) in self.claims.items() if c.endpoint_id == ep]

    def node_signal(self, node: str) -> Signal:
        return self._node_signals[node]

    def suspended(self, worker: str) -> bool:
        """Marked suspended by the scheduler: it gets no job until it is resumed (issue 16)."""
        a = self.assignments.get(worker)
        return a is not None and a.suspended

    def assignments_of(self, node: str) -> list[WorkerAssignment]:
        return [a for a in self.assignments.values() if a.node_id == node]

    def close(self) -> None:
        """Wake every long-poll so it answers at once (shutdown)."""
        self.closing = True
        for q in self._queues.values():
            q.signal.fire()
        for sig in [*self._stop_signals.values(), *self._node_signals.values()]:
            sig.fire()

    def note_seen(self, ep: str, worker: str, now: float) -> None:
        self.seen[ep][worker] = now
        self.ready_at.setdefault(worker, now)

    def subscribe(self, feed: JobFeed) -> None:
        """Tell ``feed`` about every job record and cold-start history from now on."""
        self._feeds.append(feed)

    def on_job(self, job_id: str, callback: Callable[[JobRecord | None], None]) -> Callable[[], None]:
        """Call ``callback`` on every change of ``job_id``; returns the unsubscribe."""
        self._job_waiters[job_id].append(callback)

        def unsubscribe() -> None:
            waiters = self._job_waiters.get(job_id)
            if waiters and callback in waiters:
                waiters.remove(callback)
                if not waiters:
                    del self._job_waiters[job_id]

        return unsubscribe

    def on_stream(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever a stream chunk of ``job_id`` is stored (an OpenAI
        stream relays chunks as they come instead of polling); returns the unsubscribe."""
        self._stream_waiters.setdefault(job_id, []).append(callback)

        def unsubscribe() -> None:
            waiters = self._stream_waiters.get(job_id)
            if waiters and callback in waiters:
                waiters.remove(callback)
                if not waiters:
                    del self._stream_waiters[job_id]

        return unsubscribe

    # -- the feed --------------------------------------------------------
    async def run(self) -> None:
        """List, then watch; re-list when history was compacted.  Runs until cancelled."""
        backoff = 0.1
        while True:
            try:
                start = await self._list_all()
                self.ready.set()
                async for events in self._store.watch(keys.ROOT, start_revision=start + 1):
                    for ev in events:
                        self._apply(ev)
                    backoff = 0.1
            except Compacted:
                log.warning("watch history compacted; re-listing")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("store watch failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _list_all(self) -> int:
        self._reset()
        revision = 0
        self._listing = True
        try:
            for prefix in _MIRRORED:
                res = await self._store.range(prefix)
                revision = revision or res.revision
                for kv in res.kvs:
                    self._apply(WatchEvent(type="put", kv=kv, revision=kv.mod_revision))
        finally:
            self._listing = False
        self.revision = revision
        return revision

    def _reset(self) -> None:
        for q in self._queues.values():
            q.present.clear()
            q.heap.clear()
        self.claims.clear()
        self.nodes.clear()
        self.assignments.clear()
        self.reasons.clear()
        self.mig_layouts.clear()
        self.outbox.clear()
        self.retired.clear()
        self.stops.clear()
        self.presence.clear()
        self.endpoints.clear()
        self.apikeys.clear()
        for feed in self._feeds:
            feed.relisted()

    def _apply(self, ev: WatchEvent) -> None:
        key = ev.kv.key
        self.revision = max(self.revision, ev.revision)
        try:
            # The job path's prefixes first: they are nearly every event.
            if key.startswith(keys.JOBS):
                self._apply_job(ev)
            elif key.startswith(keys.QUEUE):
                self._apply_queue(ev)
            elif key.startswith(keys.CLAIMS):
                self._apply_claim(ev)
            elif key.startswith((nkeys.NODES, nkeys.WORKERS, nkeys.REASONS, nkeys.MIGLAYOUTS)):
                self._apply_node_side(ev)
                self.cluster_changed.fire()
            elif key.startswith(keys.OUTBOX):
                self._apply_outbox(ev)
            elif key.startswith(keys.RETIRED):
                worker = key.rsplit(b"/", 1)[1].decode()
                (self.retired.add if ev.type == "put" else self.retired.discard)(worker)
                self.cluster_changed.fire()
            elif key.startswith(keys.STOPS):
                self._apply_stop(ev)
            elif key.startswith(keys.PRESENCE):
                self._apply_presence(ev)
            elif key.startswith(keys.ENDPOINTS):
                self._apply_endpoint(ev)
            elif key.startswith(keys.APIKEYS):
                self._apply_apikey(ev)
            elif key.startswith(JOBSTATS):
                self.job_stats.apply_stored(ev)
            elif key.startswith(keys.STREAM):
                if self._stream_waiters and ev.type == "put":
                    job_id = key[len(keys.STREAM) :].split(b"/", 1)[0].decode()
                    for callback in list(self._stream_waiters.get(job_id, ())):
                        callback()
            elif key.startswith(nkeys.COLDSTARTS):
                ep = key[len(nkeys.COLDSTARTS) :].decode()
                value = ev.kv.value if ev.type == "put" else None
                for feed in self._feeds:
                    feed.apply_history(ep, value, ev.kv.mod_revision, replay=self._listing)
        except msgspec.DecodeError:
            log.exception("undecodable value at %r", key)

    def _apply_node_side(self, ev: WatchEvent) -> None:
        key, put = ev.kv.key, ev.type == "put"
        if key.startswith(nkeys.NODES):
            node = key[len(nkeys.NODES) :].decode()
            old = self.nodes.get(node)
            if put:
                record = _node_decoder.decode(ev.kv.value)
                self.nodes[node] = (record, ev.kv.mod_revision)
                if old is None or old[0].draining != record.draining:
                    self._bump_node(node, ev.revision)
            else:
                self.nodes.pop(node, None)
                self._bump_node(node, ev.revision)
        elif key.startswith(nkeys.WORKERS):
            node, _, worker = key[len(nkeys.WORKERS) :].decode().partition("/")
            if put:
                a = self.assignments[worker] = _assignment_decoder.decode(ev.kv.value)
                if a.suspended:  # its job-take long-poll answers "nothing" now (issue 16)
                    self._queues[a.endpoint_id].signal.fire()
                    self._stop_signals[worker].fire()
            elif (gone := self.assignments.pop(worker, None)) is not None:
                self.seen[gone.endpoint_id].pop(worker, None)  # a stopped worker's liveness goes too
                self.ready_at.pop(worker, None)
                self._note_removed(worker, gone.endpoint_id, ev.revision)
            self._bump_node(node, ev.revision)
        elif key.startswith(nkeys.MIGLAYOUTS):
            self._apply_mig_layout(ev)
        else:
            ep = key[len(nkeys.REASONS) :].decode()
            if put and ev.kv.value:
                self.reasons[ep] = ev.kv.value.decode()
            else:
                self.reasons.pop(ep, None)

    def _note_removed(self, worker: str, ep: str, revision: int) -> None:
        self.removed_workers[worker] = revision
        self.removed_at[worker] = time.monotonic()  # a removed worker's token has a grace (api/_auth)
        while len(self.removed_workers) > _REMOVED_KEPT:  # ids are never reused: forget the oldest
            self.removed_at.pop(next(iter(self.removed_workers)), None)
            del self.removed_workers[next(iter(self.removed_workers))]
        self._queues[ep].signal.fire()  # its job-take long-poll answers "nothing" now
        self._stop_signals[worker].fire()

    def _apply_mig_layout(self, ev: WatchEvent) -> None:
        node, _, gpu = ev.kv.key[len(nkeys.MIGLAYOUTS) :].decode().partition("/")
        if ev.type == "put":
            self.mig_layouts[node][gpu] = (_mig_layout_decoder.decode(ev.kv.value), ev.kv.mod_revision)
        else:
            self.mig_layouts[node].pop(gpu, None)
        self._bump_node(node, ev.revision)  # the layout is part of what the node is told

    def _bump_node(self, node: str, revision: int) -> None:
        self.node_revisions[node] = max(self.node_revisions[node], revision)
        self._node_signals[node].fire()

    def _apply_queue(self, ev: WatchEvent) -> None:
        ep = ev.kv.key[len(keys.QUEUE) :].split(b"/", 1)[0].decode()
        q = self._queues[ep]
        if ev.type == "put":
            q.add(ev.kv.key, ev.kv.value.decode())
            q.signal.fire()
            self.cluster_changed.fire()
        else:
            q.present.pop(ev.kv.key, None)

    def _apply_job(self, ev: WatchEvent) -> None:
        job_id = ev.kv.key.rsplit(b"/", 1)[1].decode()
        record = decode_job(ev.kv.value) if ev.type == "put" else None
        if record is not None:
            for feed in self._feeds:
                feed.observe(record)
            self.job_stats.observe(record, ev.revision)
        for callback in list(self._job_waiters.get(job_id, ())):
            callback(record)

    def _apply_claim(self, ev: WatchEvent) -> None:
        job_id = ev.kv.key[len(keys.CLAIMS) :].decode()
        if ev.type == "put":
            self.claims[job_id] = (decode_claim(ev.kv.value), ev.kv.mod_revision, ev.kv.lease)
        else:
            self.claims.pop(job_id, None)
        self.claims_changed.fire()

    def _apply_outbox(self, ev: WatchEvent) -> None:
        job_id = ev.kv.key[len(keys.OUTBOX) :].decode()
        if ev.type == "put":
            self.outbox[job_id] = (_delivery_decoder.decode(ev.kv.value), ev.kv.mod_revision)
        else:
            self.outbox.pop(job_id, None)
        self.outbox_changed.fire()

    def _apply_stop(self, ev: WatchEvent) -> None:
        worker, _, job = ev.kv.key[len(keys.STOPS) :].decode().partition("/")
        if ev.type == "put":
            self.stops[worker].add(job)
            self._stop_signals[worker].fire()
        else:
            self.stops[worker].discard(job)
            if not self.stops[worker]:
                del self.stops[worker]

    def _apply_presence(self, ev: WatchEvent) -> None:
        ep, _, worker = ev.kv.key[len(keys.PRESENCE) :].decode().partition("/")
        if ev.type == "put":
            self.presence[ep][worker] = _presence_decoder.decode(ev.kv.value)
        else:
            self.presence[ep].pop(worker, None)
        self.presence_changed.fire()

    def _apply_endpoint(self, ev: WatchEvent) -> None:
        ep = ev.kv.key[len(keys.ENDPOINTS) :].decode()
        if ev.type == "put":
            endpoint = _endpoint_decoder.decode(ev.kv.value)
            old = self.endpoints.get(ep)
            self.endpoints[ep] = (endpoint, ev.kv.mod_revision)
            if old is not None and old[0].version != endpoint.version:
                # What its workers run changed: wake their nodes' long-polls to replace them.
                for node in {a.node_id for a in self.assignments.values() if a.endpoint_id == ep}:
                    self._bump_node(node, ev.revision)
        else:
            self.endpoints.pop(ep, None)
        self.endpoints_changed.fire()

    def _apply_apikey(self, ev: WatchEvent) -> None:
        digest = ev.kv.key[len(keys.APIKEYS) :].decode()
        if ev.type == "put":
            self.apikeys[digest] = _apikey_decoder.decode(ev.kv.value)
        else:
            self.apikeys.pop(digest, None)

    def note_local_put(self, kv: KeyValue) -> None:
        """Apply our own write at once (the watch will repeat it idempotently)."""
        self._apply(WatchEvent(type="put", kv=kv, revision=kv.mod_revision))
