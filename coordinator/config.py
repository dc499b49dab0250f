"""tide-coordinator's configuration: a versioned, strict TOML file.

Unknown keys are errors that name their path (``unknown key `$.jobs.claim-grace```);
every default is written here and only here (docs/config.md is generated from
these Structs, and a test checks that every key appears below).  ``main`` decodes
the file once and converts it into the runtime settings the components take.
``version`` is optional and defaults to the current one; an older file is
upgraded step by step through ``_MIGRATIONS``, a newer one is refused.
Example (all keys optional)::

    version = 1                      # the file format; this build reads 1

    [server]
    listen = "127.0.0.1:8420"        # host:port of the public, worker, admin and node APIs
    public-url = ""                  # how workers and nodes reach us; default http://<listen>

    [store]
    url = "etcd://127.0.0.1:2379"    # or "memory://" (single process, nothing survives a restart)

    [auth]
    admin-key-sha256 = []            # SHA-256 hex digests of bootstrap admin keys
    admin-key-file = ""              # or a file holding one admin key (mode 0600)

    [state]
    dir = "/var/lib/tide/coordinator"

    [jobs]
    claim-grace-s = 30.0             # a running job is requeued this long after its worker's last ping
    retention-run-s = 1800.0         # results kept after /run
    retention-sync-s = 60.0          # results kept after /runsync
    inline-limit = 262144            # larger payloads go to the blob store
    take-wait-s = 20.0               # a worker's job-take long-poll waits at most this long

    [nodes]
    lost-after-s = 15.0              # a host silent this long is lost: its workers are replaced
    mig-recut-interval-s = 30.0      # hysteresis: a MIG card is re-cut on demand at most this often

    [prices]                         # USD per GPU-hour, by GPU type (tide usage)
    "H100-80GB" = 2.49
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import msgspec

from coordinator._app import CoordinatorSettings
from coordinator.jobs import JobSettings
from tide.api.errors import InvalidArgument
from tide.config_file import Migration, load_toml_config

__all__ = ["CONFIG_VERSION", "FileConfig", "load_config", "to_settings"]

CONFIG_VERSION = 1
# version n -> a function that upgrades a decoded version-n file to version n + 1
_MIGRATIONS: dict[int, Migration] = {}


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    pass


class ServerConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    listen: str = "127.0.0.1:8420"
    public_url: str = ""


class StoreConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    url: str = "etcd://127.0.0.1:2379"


class AuthConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    admin_key_sha256: list[str] = []
    admin_key_file: str = ""


class StateConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    dir: str = "/var/lib/tide/coordinator"


class JobsConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    claim_grace_s: float = 30.0
    retention_run_s: float = 1800.0
    retention_sync_s: float = 60.0
    inline_limit: int = 256 * 1024
    take_wait_s: float = 20.0


class NodesConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    lost_after_s: float = 15.0
    mig_recut_interval_s: float = 30.0


class FileConfig(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    version: Literal[1] = 1
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    auth: AuthConfig = AuthConfig()
    state: StateConfig = StateConfig()
    jobs: JobsConfig = JobsConfig()
    nodes: NodesConfig = NodesConfig()
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
    )
