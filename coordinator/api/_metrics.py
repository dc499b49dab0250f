"""Prometheus metrics: one registry per coordinator (tests run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from coordinator._node_schema import ColdStart
from coordinator.jobs import ColdStartTracker
from coordinator.view import ClusterView

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _QueueCollector(Collector):
    def __init__(self, view: ClusterView) -> None:
        self._view = view

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queued = GaugeMetricFamily("tide_queue_depth", "Jobs waiting for a worker", labels=["endpoint"])
        running = GaugeMetricFamily("tide_jobs_in_progress", "Jobs claimed by a worker", labels=["endpoint"])
        for ep in list(self._view.endpoints):
            normal, low = self._view.queue(ep).counts()
            queued.add_metric([ep], normal + low)
            running.add_metric([ep], len(self._view.claims_of(ep)))
        yield queued
        yield running


class Metrics:
    def __init__(
        self, view: ClusterView, commit_seconds: Callable[[], list[float]], cold_starts: ColdStartTracker
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_submitted = Counter("tide_jobs_submitted", "Jobs accepted", ["endpoint"], registry=r)
        self.jobs_taken = Counter("tide_jobs_taken", "Jobs handed to workers", ["endpoint"], registry=r)
        self.api_refused = Counter(
            "tide_api_refused",
            "Public API requests refused with 429 by a per-endpoint limit (limit = rate | concurrent)",
            ["endpoint", "route", "limit"],
            registry=r,
        )
        self.runsync_seconds = Histogram(
            "tide_runsync_seconds",
            "runsync latency to a final state",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_commit_seconds = Histogram(
            "tide_store_commit_seconds", "Latency of one group commit", buckets=_LATENCY_BUCKETS, registry=r
        )
        # Cold starts recorded by the leader; every replica sees (and counts) each one once.
        self.cold_start_seconds = Histogram(
            "tide_cold_start_seconds",
            "Cold starts from zero by stage (placement, process_start, runtime_import, "
            "weight_restore, handler_ready, first_job, total; a resume: thaw and device_restore "
            "instead of process_start to weight_restore); tier = where the weights came from; "
            "path = fresh (a new process) or resume (a suspended worker thawed in place)",
            ["endpoint", "stage", "tier", "path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_QueueCollector(view))
        self._commit_seconds = commit_seconds
        cold_starts.listeners.append(self.observe_cold_start)

    def observe_cold_start(self, cs: ColdStart) -> None:
        tier = cs.weight_tier or "none"
        for s in cs.stages:
            self.cold_start_seconds.labels(cs.endpoint_id, s.stage, tier, cs.path).observe(s.seconds)
        self.cold_start_seconds.labels(cs.endpoint_id, "total", tier, cs.path).observe(cs.total_s)

    async def handle(self, request: web.Request) -> web.Response:
        samples = self._commit_seconds()
        for s in samples:
            self.store_commit_seconds.observe(s)
        samples.clear()
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")
