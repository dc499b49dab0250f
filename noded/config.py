"""tide-noded's configuration: a versioned, strict TOML file.

Unknown keys are errors that name their path (``unknown key `$.gpus.sourc```);
every default is written here and only here (docs/config.md is generated from
these Structs, and a test checks that every key appears below).  ``version`` is
optional and defaults to the current one; an older file is upgraded step by step
through ``_MIGRATIONS``, a newer one is refused.  Example (all keys optional but
``coordinator.url`` and a join key)::

    version = 1                      # the file format; this build reads 1

    [node]
    hostname = ""                    # default: the machine's hostname
    region = "EU"                    # placement constraints match these
    datacenter = "EU-RO-1"
    listen = "127.0.0.1:8421"        # noded's own HTTP server (worker logs)
    advertise = ""                   # how the coordinator reaches it; default http://<listen>

    [coordinator]
    url = "http://127.0.0.1:8420"    # one replica; or, for several:
    urls = []                        # e.g. ["http://c1:8420", "http://c2:8420"] (wins over url)
    join-key-file = "/etc/tide/node-join.key"   # an API key with scope node (or admin)
    gateway = "127.0.0.1:8422"       # workers' local way to any healthy replica; "" = direct

    [runtime]
    kind = "process"                 # or "containerd" (production; docs/hosts.md)
    state-dir = "/var/lib/tide/noded"
    containerd-socket = "/run/containerd/containerd.sock"
    stop-grace-s = 30.0
    prewarm = true                   # process runtime: fork workers from a process that imported...
    prewarm-modules = ["runpod"]     # ...these first (runpod: its dependencies); e.g. add "torch"
    suspend-budget-mb = 0            # host RAM idle workers may hold frozen (0 = stop them instead)
    suspend-settle-s = 1.0           # how long a worker stays marked suspended before it is frozen
    cuda-checkpoint = ""             # NVIDIA's cuda-checkpoint ("" = look on PATH)
    fast-worker = true               # runpod 1.12.0: no 1 s sleep between jobs (TIDE_FAST_WORKER=0)
    cdi-dirs = ["/etc/cdi", "/var/run/cdi"]     # GPU CDI specs (containerd)
    cdi-refresh = true               # regenerate into <state-dir>/cdi for new MIG devices
    systemd-cgroup = false           # true when containerd uses SystemdCgroup
    cgroup-parent = ""               # "" = "/tide" (cgroupfs) or "system.slice" (systemd)

    [runtime.registries."registry.example.com"]   # one table per registry host
    username = "robot"
    password-file = "/etc/tide/registry.password"
    token-file = ""                  # a static bearer token instead
    insecure = false                 # plain HTTP (loopback registries always are)

    [gpus]
    source = "nvml"                  # or "simulated"
    simulated = ""                   # with source = "simulated": e.g. "2xH100-80GB"

    [flashboot]
    enabled = true                   # keep the weights of flashboot endpoints on this host
    ram-budget-gb = 64.0             # T1: model weights kept in pinned host RAM
    disk-budget-gb = 512.0           # T2: weight images kept on local NVMe
    state-dir = ""                   # T2 images and the index; default <runtime.state-dir>/flashboot
    shm-dir = "/dev/shm/tide-flashboot"   # T1 (a tmpfs; best mounted huge=always)
    direct-io = true                 # O_DIRECT image reads; false for disks faster buffered

    [models]                         # the model cache (endpoints' `model`; ARCHITECTURE.md)
    enabled = true
    cache-dir = ""                   # the host tier; default <runtime.state-dir>/models (local NVMe)
    budget-gb = 200.0                # staged models above this are evicted, least recently used
    region-url = ""                  # this region's store, s3://bucket/prefix; "" = source -> host
    region-endpoint-url = ""         # e.g. "http://10.0.0.9:8333" (SeaweedFS, Ceph RGW, MinIO)
    region-credentials-file = ""     # AWS_ACCESS_KEY_ID=... / AWS_SECRET_ACCESS_KEY=... lines
    global-url = ""                  # the global store behind the region's (read-through)
    global-endpoint-url = ""
    global-credentials-file = ""
    source-endpoint-url = ""         # for s3:// model URLs ("" = AWS)
    source-credentials-file = ""
    hf-endpoint = "https://huggingface.co"   # for hf:// model URLs (or a mirror)
    hf-token-file = ""

    [mig]
    pool = []                        # GPU indices kept in MIG mode (the MIG pool); others run whole
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from tide.api.errors import InvalidArgument
from tide.daemon import Migration, StrictConfig, describe_validation_error, load_toml_config

if TYPE_CHECKING:
    from noded.runtime import RegistryAuth

__all__ = [
    "CONFIG_VERSION",
    "FileConfig",
    "RegistrySection",
    "load_config",
    "load_registries",
    "registry_auth",
]

CONFIG_VERSION = 1
# version n -> a function that upgrades a decoded version-n file to version n + 1
_MIGRATIONS: dict[int, Migration] = {}


class NodeSection(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    hostname: str = ""
    region: str = ""
    datacenter: str = ""
    listen: str = "127.0.0.1:8421"
    advertise: str = ""


class CoordinatorSection(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    url: str = "http://127.0.0.1:8420"  # the one-replica spelling of urls
    urls: list[str] = []  # every replica; noded and its workers fail over between them
    join_key_file: str = "/etc/tide/node-join.key"
    # host:port of the worker gateway (noded/_gateway.py), a process beside noded that carries
    # the workers' job-take/job-done calls to any healthy replica; "" = workers call one directly.
    gateway: str = "127.0.0.1:8422"

    def replicas(self) -> list[str]:
        return list(self.urls) or [self.url]


class RegistrySection(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    """How the containerd runtime reaches one registry host.  Secrets live in files, not here."""

    username: str = ""
    password_file: str = ""
    token_file: str = ""  # a static bearer token; wins over username/password
    insecure: bool = False  # plain HTTP (loopback registries always are)


class RuntimeSection(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    kind: Literal["process", "containerd"] = "process"
    state_dir: str = "/var/lib/tide/noded"
    containerd_socket: str = "/run/containerd/containerd.sock"
    stop_grace_s: float = 30.0
    # Process runtime: a zygote imports prewarm-modules once (never touching a GPU) and forks each
    # `python [-uBsEO] script.py ARGS` worker from it (python, python3 or noded's interpreter), so
    # cold starts skip those imports (noded/runtime/process/_pyargv.py, _zygote.py).
    prewarm: bool = True
    prewarm_modules: list[str] = msgspec.field(default_factory=lambda: ["runpod"])
    # Workers running runpod 1.12.0 take the next job the moment a slot frees instead of after the
    # SDK's 1 s sleep (an injected module on PYTHONPATH; noded/runtime/fastworker).  A worker's
    # env TIDE_FAST_WORKER=0 turns it off for that endpoint; false here, for the whole node.
    fast_worker: bool = True
    # Suspended workers (issue 16): host RAM idle workers may hold frozen in place instead of being
    # stopped when their endpoint scales down (0 = stop them, as before); how long a worker marked
    # suspended must stay marked before it is frozen (a job-take racing the mark is undone first);
    # NVIDIA's cuda-checkpoint binary ("" = look on PATH; none = freeze with the GPU memory kept).
    suspend_budget_mb: Annotated[int, msgspec.Meta(ge=0)] = 0
    suspend_settle_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    cuda_checkpoint: str = ""
    # Where nvidia-ctk cdi generate (or nvidia-cdi-refresh) writes the GPU specs.
    cdi_dirs: list[str] = msgspec.field(default_factory=lambda: ["/etc/cdi", "/var/run/cdi"])
    # When a worker's GPU or MIG device is in no spec (a MIG instance cut since the specs were
    # generated), run nvidia-ctk cdi generate into <state-dir>/cdi and look again.
    cdi_refresh: bool = True
    systemd_cgroup: bool = False  # runc's systemd cgroup driver (set it when containerd's is)
    cgroup_parent: str = ""  # "" = "/tide" (cgroupfs) or "system.slice" (systemd)
    registries: dict[str, RegistrySection] = {}  # by host: "ghcr.io", "10.0.0.5:5000"


class GpusSection(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    source: Literal["nvml", "simulated"] = "nvml"
    simulated: str = ""


class FlashbootSection(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    enabled: bool = True
    ram_budget_gb: Annotated[float, msgspec.Meta(ge=0)] = 64.0
    disk_budget_gb: Annotated[float, msgspec.Meta(ge=0)] = 512.0
    state_dir: str = ""  # "" = <runtime.state-dir>/flashboot (local disk: it holds T2)
    shm_dir: str = "/dev/shm/tide-flashboot"
    direct_io: bool = True


class ModelsSection(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    enabled: bool = True
    cache_dir: str = ""  # "" = <runtime.state-dir>/models
    budget_gb: Annotated[float, msgspec.Meta(ge=0)] = 200.0
    region_url: str = ""
    region_endpoint_url: str = ""
    region_credentials_file: str = ""
    global_url: str = ""
    global_endpoint_url: str = ""
    global_credentials_file: str = ""
    source_endpoint_url: str = ""
    source_credentials_file: str = ""
    hf_endpoint: str = "https://huggingface.co"
    hf_token_file: str = ""


class MigSection(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    pool: list[Annotated[int, msgspec.Meta(ge=0)]] = []


class FileConfig(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    version: Literal[1] = 1
    node: NodeSection = NodeSection()
    coordinator: CoordinatorSection = CoordinatorSection()
    runtime: RuntimeSection = RuntimeSection()
    gpus: GpusSection = GpusSection()
    flashboot: FlashbootSection = FlashbootSection()
    models: ModelsSection = ModelsSection()
    mig: MigSection = MigSection()

    def hostname(self) -> str:
        return self.node.hostname or socket.gethostname()


def load_config(path: str | None) -> FileConfig:
    """Decode, upgrade and validate; InvalidArgument names the file and the bad key."""
    if path is None:
        return FileConfig()
    cfg = load_toml_config(
        path, FileConfig, version=CONFIG_VERSION, migrations=_MIGRATIONS, program="tide-noded"
    )
    if cfg.gpus.source == "simulated" and not cfg.gpus.simulated:
        raise InvalidArgument(f'{path}: `$.gpus.simulated` must name the GPUs, e.g. "2xH100-80GB"')
    for url in cfg.coordinator.replicas():
        if not url.startswith(("http://", "https://")):
            raise InvalidArgument(f"{path}: `$.coordinator.urls` needs http(s) URLs, got {url!r}")
    if len(set(cfg.mig.pool)) != len(cfg.mig.pool):
        raise InvalidArgument(f"{path}: `$.mig.pool` names a GPU twice: {cfg.mig.pool}")
    return cfg


class _RegistriesFile(StrictConfig, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    registries: dict[str, RegistrySection] = {}


def load_registries(path: str) -> dict[str, RegistrySection]:
    """A file holding only ``[registries."HOST"]`` tables (``tide dev --registry-config``)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
        return msgspec.convert(raw, _RegistriesFile).registries
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"{path}: {exc}") from None
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"{path}: {describe_validation_error(exc)}") from None


def registry_auth(registries: Mapping[str, RegistrySection]) -> dict[str, RegistryAuth]:
    """The runtime's view: secrets read from their files (InvalidArgument names a bad one)."""
    from noded.runtime import RegistryAuth  # loads aiohttp: only when containerd is used

    def secret(path: str) -> str:
        try:
            return Path(path).read_text().strip() if path else ""
        except OSError as exc:
            raise InvalidArgument(f"registry secret file: {exc}") from None

    return {
        host: RegistryAuth(
            username=r.username,
            password=secret(r.password_file),
            token=secret(r.token_file),
            insecure=r.insecure,
        )
        for host, r in registries.items()
    }
