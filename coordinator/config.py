"""tide-coordinator's configuration: a versioned, strict TOML file.

Unknown keys are errors that name their path (``unknown key `$.jobs.claim-grace```);
every default is written here and only here, but for ``[limits]``, whose figures
are the API limits table's (coordinator/api/_limits.py); docs/config.md is
generated from these Structs, and a test checks that every key appears below.  ``main`` decodes
the file once and converts it into the runtime settings the components take.
``version`` is optional and defaults to the current one; an older file is
upgraded step by step through ``_MIGRATIONS``, a newer one is refused.

TLS to etcd is chosen by the URL's scheme alone: ``etcds://`` (TLS) or
``etcd://`` (plaintext); the ``*-file`` keys and ``server-name`` apply to
``etcds://`` only and are an error with a plaintext URL.  The files are read
and checked once, at startup and by ``--check-config``; restart to rotate them.
Example (all keys optional)::

    version = 1                      # the file format; this build reads 1

    [server]
    listen = "127.0.0.1:8420"        # host:port of the public, worker, admin and node APIs
    public-url = ""                  # how workers and nodes reach us; default http://<listen>
    header-timeout-s = 10.0          # a connection without a whole request head this long is closed
                                     # (new, or idle between requests: the keep-alive timeout too)
    body-timeout-s = 60.0            # a request body not received within this long: 408, closed

    [store]
    # url: "etcd://h:p[,h:p]" plaintext etcd; "etcds://h:p[,h:p]" etcd over TLS, the only
    # scheme the four keys below go with (files read at startup); "memory://" (one
    # process, nothing survives a restart)
    url = "etcd://127.0.0.1:2379"
    ca-file = ""                     # PEM CA that signed etcd's certificates; "" = public roots
    cert-file = ""                   # PEM client certificate (etcd --client-cert-auth); needs key-file
    key-file = ""                    # its unencrypted PEM key, readable by the coordinator only
    server-name = ""                 # name checked in etcd's certificates; "" = the endpoint's host;
                                     # set it for several hosts: a name every member's cert carries

    [auth]
    admin-key-sha256 = []            # SHA-256 hex digests of bootstrap admin keys
    admin-key-file = ""              # or a file holding one admin key (mode 0600)
    # The HMAC key that mints worker and node tokens: a file of >= 32 random characters
    # (openssl rand -hex 32), mode 0600, the same on every replica; read at startup.
    # "" = the legacy key in etcd at /tide/secret (a warning says how to move: docs/secrets.md)
    token-secret-file = ""

    [state]
    dir = "/var/lib/tide/coordinator"

    [blobs]
    # Where job inputs and outputs above the inline limit live.  With several replicas this
    # must be one store they all see: "s3://bucket/prefix" (S3, Ceph RGW, MinIO, SeaweedFS).
    # "" = file://<state dir>/blobs, which only this replica sees (one replica, tide dev).
    url = ""
    endpoint-url = ""                # S3 endpoint, e.g. "http://10.0.0.5:8333"; "" = AWS
    region = "us-east-1"
    # AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines (a systemd EnvironmentFile),
    # mode 0600, read at startup; "" = those variables in the environment
    credentials-file = ""
    sweep-interval-s = 300.0         # the leader deletes blobs of ended jobs this often (>= 1)
    sweep-grace-s = 600.0            # a blob younger than this is kept, job record or not (>= 60)

    [jobs]
    claim-grace-s = 30.0             # a running job is requeued this long after its worker's last ping
    retention-run-s = 1800.0         # results kept after /run
    retention-sync-s = 60.0          # results kept after /runsync
    inline-limit = 262144            # larger inputs and outputs go to the blob store (<= 524288)
    take-wait-s = 20.0               # a worker's job-take long-poll waits at most this long

    [batch]
    # run-batch (/v2/{ep}/batch): requests and results live in the object store in shards;
    # the leader hands a window of them to the job queue as low-priority jobs.
    shard-size = 1000                # requests per shard (one object; one etcd key while open)
    max-requests = 10000000          # per batch
    max-active = 100                 # unfinished batches per endpoint
    upload-limit-mb = 16384          # a JSONL upload
    request-limit-kb = 1024          # one request's JSON (larger: put it in object storage)
    allowance-workers = 0            # workers batches may use beyond an endpoint's workersMax
    prefetch = 2                     # queued batch requests per worker the pacing allows
    tick-s = 1.0                     # the dispatcher's pass (it also wakes when a request ends)

    [webhooks]
    # Webhooks go to public addresses over http(s) only: loopback, link-local, private, CGNAT,
    # multicast and reserved addresses are refused at /run and again when sent (names are
    # resolved and every address checked); cloud metadata addresses always.  No redirects.
    allow-cidrs = []                 # networks they may reach anyway, e.g. ["10.20.0.0/16"]
    allow-hosts = []                 # names that may resolve into non-public networks

    [nodes]
    lost-after-s = 15.0              # a host silent this long is lost: its workers are replaced
    mig-recut-interval-s = 30.0      # hysteresis: a MIG card is re-cut on demand at most this often

    [scheduler]
    # What every GPU host keeps back from workers' cpus / memoryMb asks (for the OS, noded,
    # containerd, FlashBoot's copy threads): CPUs, then RAM = max(min-mb, fraction x RAM),
    # capped at max-fraction x RAM.  All 0 = workers may ask for the whole host.
    host-reserve-one-cpu-per = 16    # one whole CPU per this many, rounded down; 0 = none (>= 0)
    host-reserve-memory-min-mb = 2048  # at least this much RAM (MiB, >= 0) ...
    host-reserve-memory-fraction = 0.03125  # ... or this share of RAM if more (1/32; 0..1)
    host-reserve-memory-max-fraction = 0.25  # but never more than this share of RAM (0..1)
    suspend-idle = true              # scaled-down idle workers are frozen in place (hosts with a
                                     # noded suspend budget), not stopped; false = always stop
    suspend-ttl-s = 3600.0           # a worker suspended longer than this is stopped (> 0)

    [mig]
    # Ahead-of-time re-cuts: the leader learns MIG demand per region and hour and re-cuts idle
    # cards before the hour starts.  false: it neither samples nor re-cuts ahead of time
    # (on-demand re-cuts go on; `tide mig forecast` shows the stored history, no re-cuts).
    ahead-enabled = true
    ahead-lead-s = 600.0             # prepare for the next hour this long before it (0..3600)
    ahead-card-interval-s = 1800.0   # a card is re-cut ahead of time at most this often (>= 0)
    ahead-plan-interval-s = 60.0     # the leader plans at most this often (>= 1)
    ahead-min-deficit-cards = 0.125  # act on at least this many cards' worth of missing slices ...
    ahead-deficit-fraction = 0.05    # ... and this share of the region's MIG cards (0..1)
    ahead-max-cards = 4              # cards re-cut per region per pass (>= 1)
    ahead-round-slack = 0.25         # forecast slices rounded: 1.25 -> 1, 1.3 -> 2 (0 <= x < 1)
    demand-alpha-day = 0.3           # weight of the newest day in an hour-of-day bucket (0 < x <= 1)
    demand-alpha-week = 0.4          # ... of the newest week in an hour-of-week bucket (0 < x <= 1)
    demand-min-occurrences = 2       # a bucket forecasts once it has seen this many (>= 1)
    demand-max-keys = 32             # demand keys (GPU:profile) kept per bucket (1..1024)

    [limits]
    # Per-endpoint limits of the public routes, per coordinator replica; past one: 429 with
    # Retry-After.  Operator keys, the worker API, retry and health are never limited.
    enabled = true                   # false: no limits at all
    # Per route class: rate = requests per 10 s (a token bucket: bursts up to it; >= 1);
    # concurrent = requests in flight at once (0 = unlimited, whatever the per-worker figure);
    # the effective limits are max(base, running workers x per-worker-*) (per-worker 0 = fixed).
    [limits.runsync]
    rate = 2000
    concurrent = 400
    per-worker-rate = 200
    per-worker-concurrent = 40
    [limits.run]
    rate = 1000
    concurrent = 200
    per-worker-rate = 100
    per-worker-concurrent = 20
    [limits.status]                  # status and status-sync
    rate = 2000
    concurrent = 400
    per-worker-rate = 200
    per-worker-concurrent = 40
    [limits.stream]
    rate = 2000
    concurrent = 400
    per-worker-rate = 200
    per-worker-concurrent = 40
    [limits.cancel]
    rate = 100
    concurrent = 20
    per-worker-rate = 10
    per-worker-concurrent = 2
    [limits.purge-queue]
    rate = 2
    concurrent = 0
    per-worker-rate = 0
    per-worker-concurrent = 0

    [prices]                         # USD per GPU-hour, by GPU type (tide usage)
    "H100-80GB" = 2.49
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from coordinator._token_secret import read_token_secret
from coordinator.api import LIMITS, ApiLimits, HttpLimits, Route, RouteLimit
from coordinator.batches import BatchSettings
from coordinator.control import BlobSweepSettings
from coordinator.jobs import MAX_INLINE_LIMIT, JobSettings, WebhookPolicy
from coordinator.scheduling import AheadSettings, DemandSettings, HostReserve, SuspendSettings
from coordinator.server import CoordinatorSettings
from coordinator.store import EtcdTls, Store, open_store
from tide.api.errors import InvalidArgument
from tide.daemon import Migration, StrictConfig, load_toml_config
from tiered_storage import ObjectStore, open_object_store

__all__ = ["CONFIG_VERSION", "FileConfig", "load_config", "to_settings", "to_store"]

CONFIG_VERSION = 1
# version n -> a function that upgrades a decoded version-n file to version n + 1
_MIGRATIONS: dict[int, Migration] = {}


class ServerConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    listen: str = "127.0.0.1:8420"
    public_url: str = ""
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 10.0
    body_timeout_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 60.0


class StoreConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    url: str = "etcd://127.0.0.1:2379"
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""


class AuthConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    admin_key_sha256: list[str] = []
    admin_key_file: str = ""
    token_secret_file: str = ""


class StateConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    dir: str = "/var/lib/tide/coordinator"


class BlobsConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    url: str = ""
    endpoint_url: str = ""
    region: str = "us-east-1"
    credentials_file: str = ""
    sweep_interval_s: Annotated[float, msgspec.Meta(ge=1.0, le=86400.0)] = 300.0
    sweep_grace_s: Annotated[float, msgspec.Meta(ge=60.0, le=7 * 86400.0)] = 600.0


class BatchConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    shard_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    max_requests: Annotated[int, msgspec.Meta(ge=1)] = 10_000_000
    max_active: Annotated[int, msgspec.Meta(ge=1)] = 100
    upload_limit_mb: Annotated[int, msgspec.Meta(ge=1)] = 16384
    request_limit_kb: Annotated[int, msgspec.Meta(ge=1, le=64 * 1024)] = 1024
    allowance_workers: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    prefetch: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    tick_s: Annotated[float, msgspec.Meta(ge=0.05, le=60.0)] = 1.0


class JobsConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    claim_grace_s: float = 30.0
    retention_run_s: float = 1800.0
    retention_sync_s: float = 60.0
    inline_limit: Annotated[int, msgspec.Meta(ge=0, le=MAX_INLINE_LIMIT)] = 256 * 1024
    take_wait_s: float = 20.0


class WebhooksConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    allow_cidrs: list[str] = []
    allow_hosts: list[str] = []


class NodesConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    lost_after_s: float = 15.0
    mig_recut_interval_s: float = 30.0


_Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class SchedulerConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    host_reserve_one_cpu_per: Annotated[int, msgspec.Meta(ge=0)] = 16
    host_reserve_memory_min_mb: Annotated[int, msgspec.Meta(ge=0)] = 2048
    host_reserve_memory_fraction: _Fraction = 0.03125
    host_reserve_memory_max_fraction: _Fraction = 0.25
    # Issue 16: scaled-down idle workers are suspended (on hosts whose noded keeps a suspend
    # budget) instead of stopped; one suspended longer than suspend-ttl-s is stopped.
    suspend_idle: bool = True
    suspend_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0


class MigConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    ahead_enabled: bool = True
    ahead_lead_s: Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)] = 600.0
    ahead_card_interval_s: Annotated[float, msgspec.Meta(ge=0.0, le=7 * 86400.0)] = 1800.0
    ahead_plan_interval_s: Annotated[float, msgspec.Meta(ge=1.0, le=86400.0)] = 60.0
    ahead_min_deficit_cards: Annotated[float, msgspec.Meta(ge=0.0, le=1e6)] = 0.125
    ahead_deficit_fraction: _Fraction = 0.05
    ahead_max_cards: Annotated[int, msgspec.Meta(ge=1)] = 4
    ahead_round_slack: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.25
    demand_alpha_day: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.3
    demand_alpha_week: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.4
    demand_min_occurrences: Annotated[int, msgspec.Meta(ge=1)] = 2
    demand_max_keys: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32


_Rate = Annotated[int, msgspec.Meta(ge=1)]
_Count = Annotated[int, msgspec.Meta(ge=0)]


class RouteLimitConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    """One route class's limits; each route's subclass takes its defaults from the API limits
    table (coordinator/api/_limits.py, RunPod's figures), the one place they are written."""

    rate: _Rate
    concurrent: _Count  # 0 = unlimited
    per_worker_rate: _Count
    per_worker_concurrent: _Count


class RunsyncLimits(RouteLimitConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    rate: _Rate = LIMITS["runsync"].rate
    concurrent: _Count = LIMITS["runsync"].concurrent or 0
    per_worker_rate: _Count = LIMITS["runsync"].per_worker_rate
    per_worker_concurrent: _Count = LIMITS["runsync"].per_worker_concurrent


class RunLimits(RouteLimitConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    rate: _Rate = LIMITS["run"].rate
    concurrent: _Count = LIMITS["run"].concurrent or 0
    per_worker_rate: _Count = LIMITS["run"].per_worker_rate
    per_worker_concurrent: _Count = LIMITS["run"].per_worker_concurrent


class StatusLimits(RouteLimitConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    rate: _Rate = LIMITS["status"].rate
    concurrent: _Count = LIMITS["status"].concurrent or 0
    per_worker_rate: _Count = LIMITS["status"].per_worker_rate
    per_worker_concurrent: _Count = LIMITS["status"].per_worker_concurrent


class StreamLimits(RouteLimitConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    rate: _Rate = LIMITS["stream"].rate
    concurrent: _Count = LIMITS["stream"].concurrent or 0
    per_worker_rate: _Count = LIMITS["stream"].per_worker_rate
    per_worker_concurrent: _Count = LIMITS["stream"].per_worker_concurrent


class CancelLimits(RouteLimitConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    rate: _Rate = LIMITS["cancel"].rate
    concurrent: _Count = LIMITS["cancel"].concurrent or 0
    per_worker_rate: _Count = LIMITS["cancel"].per_worker_rate
    per_worker_concurrent: _Count = LIMITS["cancel"].per_worker_concurrent


class PurgeQueueLimits(
    RouteLimitConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"
):
    rate: _Rate = LIMITS["purge-queue"].rate
    concurrent: _Count = LIMITS["purge-queue"].concurrent or 0
    per_worker_rate: _Count = LIMITS["purge-queue"].per_worker_rate
    per_worker_concurrent: _Count = LIMITS["purge-queue"].per_worker_concurrent


class LimitsConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    enabled: bool = True
    runsync: RunsyncLimits = RunsyncLimits()
    run: RunLimits = RunLimits()
    status: StatusLimits = StatusLimits()
    stream: StreamLimits = StreamLimits()
    cancel: CancelLimits = CancelLimits()
    purge_queue: PurgeQueueLimits = PurgeQueueLimits()


class FileConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    version: Literal[1] = 1
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    auth: AuthConfig = AuthConfig()
    state: StateConfig = StateConfig()
    blobs: BlobsConfig = BlobsConfig()
    jobs: JobsConfig = JobsConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    nodes: NodesConfig = NodesConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    mig: MigConfig = MigConfig()
    limits: LimitsConfig = LimitsConfig()
    batch: BatchConfig = BatchConfig()
    prices: dict[str, float] = {}


def load_config(path: str | None) -> FileConfig:
    """Decode, upgrade and validate; InvalidArgument names the file and the bad key."""
    if path is None:
        return FileConfig()
    return load_toml_config(
        path, FileConfig, version=CONFIG_VERSION, migrations=_MIGRATIONS, program="tide-coordinator"
    )


def to_settings(cfg: FileConfig) -> CoordinatorSettings:
    host, _, port = cfg.server.listen.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgument(f"`$.server.listen` must be host:port, got {cfg.server.listen!r}")
    hashes = list(cfg.auth.admin_key_sha256)
    if cfg.auth.admin_key_file:
        try:
            secret = Path(cfg.auth.admin_key_file).read_text().strip()
        except OSError as exc:
            raise InvalidArgument(f"`$.auth.admin-key-file`: cannot read it: {exc}") from None
        hashes.append(hashlib.sha256(secret.encode()).hexdigest())
    jobs = JobSettings(
        claim_grace_s=cfg.jobs.claim_grace_s,
        retention_run_s=cfg.jobs.retention_run_s,
        retention_sync_s=cfg.jobs.retention_sync_s,
        inline_limit=cfg.jobs.inline_limit,
        take_wait_s=cfg.jobs.take_wait_s,
        webhooks=_webhooks(cfg.webhooks),
    )
    return CoordinatorSettings(
        host=host.strip("[]"),
        port=int(port),
        state_dir=cfg.state.dir,
        admin_key_hashes=hashes,
        jobs=jobs,
        public_url=cfg.server.public_url,
        prices=dict(cfg.prices),
        node_lost_after_s=cfg.nodes.lost_after_s,
        mig_recut_interval_s=cfg.nodes.mig_recut_interval_s,
        host_reserve=_host_reserve(cfg.scheduler),
        mig_ahead=_mig_ahead(cfg.mig),
        suspend=SuspendSettings(enabled=cfg.scheduler.suspend_idle, ttl_s=cfg.scheduler.suspend_ttl_s),
        api_limits=_api_limits(cfg.limits),
        http=HttpLimits(
            header_timeout_s=cfg.server.header_timeout_s, body_timeout_s=cfg.server.body_timeout_s
        ),
        token_secret=read_token_secret(cfg.auth.token_secret_file) if cfg.auth.token_secret_file else None,
        objects=_objects(cfg.blobs),
        blob_sweep=BlobSweepSettings(interval_s=cfg.blobs.sweep_interval_s, grace_s=cfg.blobs.sweep_grace_s),
        batch=_batch(cfg.batch),
    )


def _batch(b: BatchConfig) -> BatchSettings:
    return BatchSettings(
        shard_size=b.shard_size,
        max_requests=b.max_requests,
        max_active=b.max_active,
        upload_limit=b.upload_limit_mb * 1024 * 1024,
        request_limit=b.request_limit_kb * 1024,
        allowance_workers=b.allowance_workers,
        prefetch=b.prefetch,
        tick_s=b.tick_s,
    )


def _objects(b: BlobsConfig) -> ObjectStore | None:
    """The object store ``[blobs]`` names; None: the state dir's (the server's default)."""
    if not b.url:
        if b.endpoint_url or b.credentials_file:
            raise InvalidArgument("`$.blobs.endpoint-url` and `credentials-file` need `$.blobs.url`")
        return None
    try:
        return open_object_store(
            b.url, endpoint_url=b.endpoint_url, region=b.region, credentials_file=b.credentials_file
        )
    except InvalidArgument as exc:
        raise InvalidArgument(f"`$.blobs`: {exc.message}") from None


def _webhooks(w: WebhooksConfig) -> WebhookPolicy:
    policy = WebhookPolicy(
        allow_cidrs=tuple(w.allow_cidrs), allow_hosts=tuple(h.rstrip(".").lower() for h in w.allow_hosts)
    )
    try:
        policy.networks()
    except ValueError as exc:
        raise InvalidArgument(f"`$.webhooks.allow-cidrs`: {exc}") from None
    return policy


def _host_reserve(s: SchedulerConfig) -> HostReserve:
    return HostReserve(
        one_cpu_per=s.host_reserve_one_cpu_per,
        memory_min_mb=s.host_reserve_memory_min_mb,
        memory_fraction=s.host_reserve_memory_fraction,
        memory_max_fraction=s.host_reserve_memory_max_fraction,
    )


def _mig_ahead(m: MigConfig) -> AheadSettings:
    return AheadSettings(
        enabled=m.ahead_enabled,
        lead_s=m.ahead_lead_s,
        card_interval_s=m.ahead_card_interval_s,
        plan_interval_s=m.ahead_plan_interval_s,
        min_deficit_cards=m.ahead_min_deficit_cards,
        deficit_fraction=m.ahead_deficit_fraction,
        max_cards=m.ahead_max_cards,
        round_slack=m.ahead_round_slack,
        demand=DemandSettings(
            alpha_day=m.demand_alpha_day,
            alpha_week=m.demand_alpha_week,
            min_occurrences=m.demand_min_occurrences,
            max_keys=m.demand_max_keys,
        ),
    )


def _api_limits(c: LimitsConfig) -> ApiLimits:
    given: dict[Route, RouteLimitConfig] = {
        "runsync": c.runsync,
        "run": c.run,
        "status": c.status,
        "stream": c.stream,
        "cancel": c.cancel,
        "purge-queue": c.purge_queue,
    }
    routes: dict[Route, RouteLimit] = {
        route: RouteLimit(
            rate=r.rate,
            concurrent=r.concurrent or None,  # 0 = unlimited, whatever per-worker-concurrent says
            per_worker_rate=r.per_worker_rate,
            per_worker_concurrent=r.per_worker_concurrent,
        )
        for route, r in given.items()
    }
    return ApiLimits(enabled=c.enabled, routes=routes)


def to_store(cfg: FileConfig, *, url: str = "") -> Store:
    """The Store ``[store]`` describes (``url``, if given, overrides store.url, as --store
    does).  Reads and checks the TLS files now, so a missing, unreadable or mismatched one
    fails startup and ``--check-config`` with the key to fix; no network I/O."""
    url = url or cfg.store.url
    tls = _store_tls(cfg.store, url)
    try:
        return open_store(url, tls=tls)
    except InvalidArgument as exc:
        raise InvalidArgument(f"`$.store`: {exc.message}") from None


def _store_tls(s: StoreConfig, url: str) -> EtcdTls | None:
    given = {
        "ca-file": s.ca_file,
        "cert-file": s.cert_file,
        "key-file": s.key_file,
        "server-name": s.server_name,
    }
    if not url.startswith(("etcds://", "https://")):
        if extra := [k for k, v in given.items() if v]:
            raise InvalidArgument(
                f"`$.store.{extra[0]}` is set, but `$.store.url` ({url}) is plaintext: "
                "use etcds://host:port[,host:port] for TLS, or remove the TLS keys"
            )
        return None
    if bool(s.cert_file) != bool(s.key_file):
        missing, present = ("key-file", "cert-file") if s.cert_file else ("cert-file", "key-file")
        raise InvalidArgument(
            f"`$.store.{missing}` is empty but `$.store.{present}` is set: a client certificate needs both"
        )
    ca = _read_pem("ca-file", s.ca_file, "CERTIFICATE") if s.ca_file else None
    if ca is not None:
        _check_tls("ca-file", lambda ctx: ctx.load_verify_locations(cadata=ca.decode("ascii", "replace")))
    cert = key = None
    if s.cert_file:
        cert = _read_pem("cert-file", s.cert_file, "CERTIFICATE")
        key = _read_pem("key-file", s.key_file, "PRIVATE KEY")
        if b"ENCRYPTED" in key:
            raise InvalidArgument(f"`$.store.key-file`: {s.key_file} is encrypted; grpc needs a plain key")
        _check_tls("cert-file", lambda ctx: ctx.load_cert_chain(s.cert_file, s.key_file, password=b""))
    return EtcdTls(ca=ca, cert=cert, key=key, server_name=s.server_name)


def _read_pem(key: str, path: str, kind: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"`$.store.{key}`: cannot read {path}: {exc.strerror or exc}") from None
    if f"{kind}-----".encode() not in data:  # BEGIN CERTIFICATE-----, BEGIN EC PRIVATE KEY-----
        raise InvalidArgument(f"`$.store.{key}`: {path} holds no PEM {kind.lower()}")
    return data


def _check_tls(key: str, load: Callable[[ssl.SSLContext], None]) -> None:
    """Let OpenSSL parse what grpc will use: a bad CA or a key that is not the
    certificate's fails here, by key, instead of as a handshake error later."""
    try:
        load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    except (ssl.SSLError, ValueError) as exc:
        what = "the certificate and key-file do not match or do not parse" if key == "cert-file" else "bad CA"
        raise InvalidArgument(f"`$.store.{key}`: {what}: {exc}") from None
