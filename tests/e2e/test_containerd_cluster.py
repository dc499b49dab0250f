"""``tide dev --runtime containerd`` end to end: real containerd + runc, a real registry, the
unmodified examples/echo handler in an OCI image, the real ``runpod`` SDK as client.

The module starts containerd and docker-registry (tests/fixtures), pushes an image whose
entrypoint runs the handler with the host's Python (bind-mounted read-only through
``--containerd-bind``: the image itself carries no interpreter, which keeps it tiny), and
runs a ``tide dev`` cluster (the in-process ``DevCluster``, built from the real command
line) on its own event loop in a thread.  One endpoint with two workers, each with a CPU
and a memory limit and one simulated GPU whose CDI spec maps to a fake device node.
The class's tests run in order on that cluster: serve, limits, devices, a killed
container, then a noded restart.  The pure tests at the end check the plumbing from
noded.toml and ``tide dev``'s flags into the runtime's config; they need no containerd.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from noded.runtime import WorkerStatus
from noded.runtime.containerd import gen_protos
from tests.fixtures.containerd import ContainerdServer, containerd_missing
from tests.fixtures.coordinator import REPO_ROOT, Admin, http_json, wait_until
from tests.fixtures.oci_image import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    build_test_image,
    host_python_mounts,
    push_image,
)
from tests.fixtures.oci_image import TestImage as OciImage  # "Test*" names would be collected
from tests.fixtures.registry import RegistryServer, registry_missing

T = TypeVar("T")
NODE = "node-1"
CPUS, MEMORY_MB = 0.5, 256
# runc's own /dev: what every worker sees besides the nodes of the GPUs it was given.
STANDARD_DEV = {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue"}
STANDARD_DEV |= {"fd", "stdin", "stdout", "stderr", "core", "console"}
# runc's default devices-cgroup allow list (its /dev nodes, pts, tun; mknod everywhere, which
# CAP_MKNOD's absence makes moot).  The fake GPU nodes are /dev/null (1:3): nothing more.
RUNC_DEVICE_RULES = {"b *:* m", "c *:* m", "c 136:* rwm", "c 10:200 rwm"}
RUNC_DEVICE_RULES |= {f"c {n} rwm" for n in ("1:3", "1:5", "1:7", "1:8", "1:9", "5:0", "5:1", "5:2")}


# -- the image ------------------------------------------------------------------------------
ECHO_HANDLER = REPO_ROOT / "examples/echo/handler.py"
MLP_HANDLER = REPO_ROOT / "examples/torch-mlp/handler.py"
MLP_HIDDEN = 64


def _layer(files: dict[str, bytes]) -> tuple[str, Blob]:
    """(diff id, gzip layer blob) of regular files, reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    zipped = io.BytesIO()
    with gzip.GzipFile(fileobj=zipped, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest(), Blob(OCI_LAYER_GZIP, zipped.getvalue())


def handler_image(handler_file: Path) -> OciImage:
    """The fixtures' skeleton image plus /app/handler.py (an example's, unmodified), with an
    entrypoint that runs it: the endpoint gives no command, so the image's own is used."""
    base = build_test_image()
    base_config = json.loads(base.config.data)
    diff_id, handler = _layer({"app/handler.py": handler_file.read_bytes()})
    arch = base_config["architecture"]
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": [sys.executable, "-u"],
            "Cmd": ["/app/handler.py"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "WorkingDir": "/app",
        },
        "rootfs": {"type": "layers", "diff_ids": [*base_config["rootfs"]["diff_ids"], diff_id]},
    }
    layers = [*base.layers, handler]
    config_blob = Blob(OCI_CONFIG, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in layers],
    }
    manifest_blob = Blob(OCI_MANIFEST, json.dumps(manifest, sort_keys=True).encode())
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [manifest_blob.descriptor()]}
    return OciImage(layers, config_blob, manifest_blob, Blob(OCI_INDEX, json.dumps(index).encode()))


def weights_dir(root: Path) -> Path:
    path = root / "weights"
    path.mkdir(exist_ok=True)
    return path


def write_fake_cdi(cdi_dir: Path, gpu_uuids: list[str]) -> dict[str, str]:
    """A CDI spec shaped like nvidia-ctk's (uuid names) for the simulated GPUs; every device
    node is really /dev/null.  Returns uuid -> the node's name in the worker's /dev."""
    nodes = {u: f"nvidia{i}" for i, u in enumerate(gpu_uuids)}
    spec = {
        "cdiVersion": "0.5.0",
        "kind": "nvidia.com/gpu",
        "devices": [
            {"name": u, "containerEdits": {"deviceNodes": [{"path": f"/dev/{n}", "hostPath": "/dev/null"}]}}
            for u, n in nodes.items()
        ],
        "containerEdits": {"deviceNodes": [{"path": "/dev/nvidiactl", "hostPath": "/dev/null"}]},
    }
    cdi_dir.mkdir(parents=True, exist_ok=True)
    (cdi_dir / "nvidia.json").write_text(json.dumps(spec))
    return nodes


# -- the cluster ----------------------------------------------------------------------------


class Dev:
    """A DevCluster on its own event loop in a thread; ``call`` runs a coroutine there."""

    def __init__(self, argv: list[str]) -> None:
        from tide.dev import parser

        self.args = parser().parse_args(argv)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="tide-dev", daemon=True)
        self._thread.start()
        self.cluster: Any = None
        self.agent: Any = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        from tide.dev import DevCluster

        async def start() -> None:
            self.cluster = DevCluster(self.args)
            await self.cluster.start()
            self.agent = await self.cluster.add_node(NODE, 0)

        self.call(start())

    @property
    def admin(self) -> Admin:
        return Admin(self.cluster.url, self.cluster.api_key)

    def workers(self) -> list[WorkerStatus]:
        """What containerd runs for this node (its runtime's view: owner label tide-dev-node-1)."""
        return list(self.call(self.agent.runtime.list()))

    def running(self, n: int) -> list[WorkerStatus]:
        def check() -> list[WorkerStatus] | None:
            found = [w for w in self.workers() if w.state == "running"]
            return found if len(found) == n else None

        return list(wait_until(check, timeout=30, interval=0.1, what=f"{n} running containers"))

    def restart_node(self) -> None:
        """noded restarts: the agent stops (its workers keep running), a new agent and runtime
        object for the same host start and adopt what containerd runs."""

        async def restart() -> None:
            await self.agent.stop()
            await self.agent.runtime.close()
            self.agent = await self.cluster.add_node(NODE, 0)

        self.call(restart())

    def stop(self) -> None:
        try:
            if self.cluster is not None:
                self.call(self.cluster.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


class Env:
    def __init__(self, dev: Dev, endpoint: str, devices: dict[str, str], root: Path, registry: str) -> None:
        self.dev = dev
        self.endpoint = endpoint
        self.devices = devices  # GPU uuid -> its fake node's name
        self.root = root
        self.registry = registry  # host:port

    def sdk(self) -> Any:
        import runpod

        runpod.endpoint_url_base = self.dev.cluster.url + "/v2"
        return runpod.Endpoint(self.endpoint, api_key=self.dev.cluster.api_key)

    def status(self, job: str) -> dict[str, Any]:
        url = f"{self.dev.cluster.url}/v2/{self.endpoint}/status/{job}"
        code, body = http_json("GET", url, key=self.dev.cluster.api_key)
        assert code == 200, body
        return dict(body)


def _skip_reason() -> str | None:
    reason = containerd_missing() or registry_missing()
    if reason:
        return reason
    try:
        gen_protos.generate(Path(gen_protos.PROTO_ROOT))  # a no-op when the stubs are current
    except gen_protos.ProtoGenError as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("ctrd-cluster")
    server, registry = ContainerdServer(), RegistryServer()
    dev: Dev | None = None
    try:
        server.start()
        registry.start()
        push_image(handler_image(ECHO_HANDLER), registry.url, "tide/echo", "1")
        push_image(handler_image(MLP_HANDLER), registry.url, "tide/torch-mlp", "1")
        argv = ["--port", "0", "--nodes", "0", "--gpus", "3xH100-80GB", "--claim-grace", "3"]
        argv += ["--state-dir", str(root / "state"), "--runtime", "containerd"]
        argv += ["--suspend-budget-mb", "0"]  # scale-to-zero here means fresh containers (T1 test)
        argv += ["--containerd-socket", server.socket, "--cdi-dir", str(root / "cdi")]
        # The host's Python, plus the checkout (an editable install's flashboot lives there) and
        # the torch example's weights, which every worker must see at one path with one mtime.
        for src in [*(src for src, _ in host_python_mounts()), str(REPO_ROOT), str(weights_dir(root))]:
            argv += ["--containerd-bind", src]
        dev = Dev(argv)
        dev.start()
        nodes = dev.admin.call("GET", "/admin/v1/nodes")
        gpus = [g["uuid"] for n in nodes for g in n["inventory"]["gpus"]]
        devices = write_fake_cdi(root / "cdi", gpus)
        ep = f"echo-{uuid.uuid4().hex[:6]}"
        # No command: the image's entrypoint runs the handler.  Loopback registry: plain HTTP.
        dev.admin.call(
            "POST",
            "/admin/v1/endpoints",
            {
                "name": ep,
                "image": f"{registry.host}/tide/echo:1",
                "workersMin": 2,
                "workersMax": 2,
                "cpus": CPUS,
                "memoryMb": MEMORY_MB,
            },
        )
        yield Env(dev, ep, devices, root, registry.host)
    finally:
        if dev is not None:
            dev.stop()
        registry.stop()
        server.stop()


# -- reading a container from the host ----------------------------------------------------


def _cgroup_dir(pid: int, controller: str) -> Path:
    """The directory of ``pid``'s cgroup for ``controller`` (v1), or its unified one (v2)."""
    paths: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    with open("/proc/self/mounts") as f:
        mounts = [line.split() for line in f]
    for _, target, fstype, opts, *_ in mounts:
        if fstype == "cgroup" and controller in opts.split(","):
            return Path(target + paths[controller])
    unified = next(m[1] for m in mounts if m[2] == "cgroup2")
    return Path(unified + paths[""])


def cgroup_limits(pid: int) -> tuple[str, str]:
    """(memory limit in bytes, "quota period" of the CPU) from the kernel, v1 or v2."""
    mem, cpu = _cgroup_dir(pid, "memory"), _cgroup_dir(pid, "cpu")
    if (mem / "memory.max").exists():
        return (mem / "memory.max").read_text().strip(), (cpu / "cpu.max").read_text().strip()
    quota = (cpu / "cpu.cfs_quota_us").read_text().strip()
    period = (cpu / "cpu.cfs_period_us").read_text().strip()
    return (mem / "memory.limit_in_bytes").read_text().strip(), f"{quota} {period}"


def device_rules(pid: int) -> list[str] | None:
    """The devices cgroup's allow list (cgroup v1), or None where there is none to read."""
    path = _cgroup_dir(pid, "devices") / "devices.list"
    return path.read_text().split("\n")[:-1] if path.exists() else None


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(kv.decode().partition("=")[::2] for kv in raw if kv)


# -- the tests (in order, on one cluster) -------------------------------------------------


class TestContainerdCluster:
    """In file order, on the module's cluster."""

    pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(90)]

    def test_endpoint_from_a_registry_image_serves_runpod_sdk_requests(self, env: Env) -> None:
        workers = env.dev.running(2)
        assert {w.labels["tide.endpoint"] for w in workers} == {env.endpoint}
        sdk = env.sdk()
        assert sdk.run_sync({"prompt": "hi", "n": 1}, timeout=45) == {"echo": {"prompt": "hi", "n": 1}}
        # The image's entrypoint ran (the endpoint has no command) with the endpoint's env.
        for w in workers:
            argv = Path(f"/proc/{w.pid}/cmdline").read_bytes().split(b"\0")[:-1]
            assert argv == [sys.executable.encode(), b"-u", b"/app/handler.py"]
            assert environ(w.pid)["RUNPOD_ENDPOINT_ID"] == env.endpoint

    def test_cpu_and_memory_limits_are_in_the_workers_cgroups(self, env: Env) -> None:
        for w in env.dev.running(2):
            memory, cpu = cgroup_limits(w.pid)
            assert int(memory) == MEMORY_MB << 20
            assert cpu == f"{int(CPUS * 100_000)} 100000"

    def test_a_worker_sees_only_the_devices_it_was_given(self, env: Env) -> None:
        modes = {e.name: e.stat(follow_symlinks=False).st_mode for e in os.scandir("/dev")}
        host_nodes = {n for n, m in modes.items() if stat.S_ISCHR(m) or stat.S_ISBLK(m)} - STANDARD_DEV
        assert host_nodes, "the host has device nodes of its own to hide"
        seen: list[str] = []
        for w in env.dev.running(2):
            gpu = environ(w.pid)["NVIDIA_VISIBLE_DEVICES"]
            assert gpu in env.devices and environ(w.pid)["CUDA_VISIBLE_DEVICES"] == gpu
            seen.append(gpu)
            dev = set(os.listdir(f"/proc/{w.pid}/root/dev"))  # the container's own /dev
            assert dev - STANDARD_DEV == {env.devices[gpu], "nvidiactl"}, sorted(dev)
            assert not dev & host_nodes
            allowed = device_rules(w.pid)
            if allowed is not None:  # cgroup v1: the kernel's allow list (v2 uses an eBPF program)
                assert set(allowed) <= RUNC_DEVICE_RULES, "\n".join(allowed)
        assert len(set(seen)) == 2  # one GPU each; the third is nobody's

    def test_a_killed_container_is_replaced_and_its_job_completes(self, env: Env) -> None:
        before = {w.id: w.pid for w in env.dev.running(2)}
        sdk = env.sdk()
        job = sdk.run({"sleep": 2})

        def in_progress() -> dict[str, Any] | None:
            status = env.status(job.job_id)
            return status if status["status"] == "IN_PROGRESS" else None

        victim = wait_until(in_progress, timeout=30, what="the job to start")["workerId"]
        os.kill(before[victim], signal.SIGKILL)  # the container's init, from the host

        def replaced() -> list[WorkerStatus] | None:
            now = [w for w in env.dev.workers() if w.state == "running"]
            fresh = {w.id: w.pid for w in now}
            return now if len(now) == 2 and before.get(victim) not in fresh.values() else None

        wait_until(replaced, timeout=30, interval=0.1, what="the killed worker to be replaced")
        assert job.output(timeout=45) == {"echo": {"sleep": 2}}
        assert sdk.run_sync({"after": "kill"}, timeout=45) == {"echo": {"after": "kill"}}

    def test_a_restarted_noded_adopts_the_running_containers(self, env: Env) -> None:
        before = {w.id: w.pid for w in env.dev.running(2)}
        env.dev.restart_node()
        after = {w.id: w.pid for w in env.dev.workers() if w.state == "running"}
        assert after == before  # adopted: the same tasks, no duplicates, nothing restarted
        assert set(env.dev.agent.runners) == set(before)
        assert env.sdk().run_sync({"after": "restart"}, timeout=45) == {"echo": {"after": "restart"}}
        assert {w.id: w.pid for w in env.dev.workers()} == before

    def test_a_flashboot_endpoint_restores_its_weights_from_t1_in_a_new_container(self, env: Env) -> None:
        """torch-mlp (unmodified) in containers: the first worker loads the weights file, the
        keeper keeps them in T1 after the endpoint scales to zero, the next container maps them."""
        weights = weights_dir(env.root) / f"torch-mlp-{MLP_HIDDEN}.safetensors"
        gen_env = {**os.environ, "TIDE_EXAMPLE_WEIGHTS": str(weights)}
        gen_env["TIDE_EXAMPLE_MLP_HIDDEN"] = str(MLP_HIDDEN)
        code = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='gen')"
        subprocess.run([sys.executable, "-c", code, str(MLP_HANDLER)], env=gen_env, check=True, timeout=60)
        ep = f"mlp-{uuid.uuid4().hex[:6]}"
        env_vars = {"TIDE_EXAMPLE_WEIGHTS": str(weights), "TIDE_EXAMPLE_MLP_HIDDEN": str(MLP_HIDDEN)}
        env_vars["PYTHONPATH"] = str(REPO_ROOT)  # Tide's worker SDK (flashboot), as an image would ship it
        spec = {"name": ep, "image": f"{env.registry}/tide/torch-mlp:1", "env": env_vars}
        spec |= {"flashboot": True, "workersMin": 0, "workersMax": 1, "idleTimeout": 1}
        spec |= {"cpus": 1, "memoryMb": 1024}
        env.dev.admin.call("POST", "/admin/v1/endpoints", spec)
        url = f"{env.dev.cluster.url}/v2/{ep}/runsync?wait=60000"
        body = {"input": {"x": [[0.01 * i for i in range(16)]]}}
        outputs = []
        for _ in range(2):
            wait_until(lambda: not _endpoint_containers(env, ep), timeout=60, what=f"{ep} at zero workers")
            code_, out = http_json("POST", url, body, key=env.dev.cluster.api_key)
            assert code_ == 200 and out["status"] == "COMPLETED", out
            outputs.append(out["output"])
        assert [o["tier"] for o in outputs] == ["source", "t1"]
        assert outputs[0]["y"] == outputs[1]["y"]  # bitwise the same weights

        def last_cold_start() -> Any:  # the worker's boot report reaches noded, then the coordinator
            cold = env.dev.admin.call("GET", f"/admin/v1/endpoints/{ep}")["lastColdStart"]
            return cold if cold and cold["workerId"] == out["workerId"] and cold["complete"] else None

        cold = wait_until(last_cold_start, timeout=20, what="the second worker's cold start report")
        assert cold["weightTier"] == "t1" and cold["weightBytes"] > 0


def _endpoint_containers(env: Env, endpoint: str) -> list[WorkerStatus]:
    return [w for w in env.dev.workers() if w.labels.get("tide.endpoint") == endpoint]


# -- the plumbing the cluster relies on (pure; no containerd needed) ----------------------


def test_loopback_registries_speak_plain_http_others_only_when_insecure() -> None:
    from noded.runtime.containerd._registry import is_loopback

    assert all(map(is_loopback, ["127.0.0.1:5000", "127.9.9.9", "localhost:5000", "[::1]:5000", "::1"]))
    assert not any(map(is_loopback, ["ghcr.io", "10.0.0.5:5000", "localhost.example.com:5000"]))


def test_cgroups_path_follows_the_cgroup_driver() -> None:
    from noded.runtime.containerd._runtime import ContainerdConfig, cgroups_path

    assert cgroups_path(ContainerdConfig(log_dir="/l"), "w1") == "/tide/w1"
    systemd = ContainerdConfig(log_dir="/l", systemd_cgroup=True, cgroup_parent="tide.slice")
    assert cgroups_path(systemd, "w1") == "tide.slice:tide:w1"
    assert cgroups_path(ContainerdConfig(log_dir="/l", systemd_cgroup=True), "w1") == "system.slice:tide:w1"


def test_simulated_gpus_without_a_cdi_spec_get_no_device_edits() -> None:
    from noded.runtime.containerd._cdi import CdiSpec, known_devices

    spec = msgspec.convert({"kind": "nvidia.com/gpu", "devices": [{"name": "GPU-a"}]}, CdiSpec)
    assert known_devices([spec], ["GPU-b", "GPU-a", "nvidia.com/gpu=GPU-a"]) == [
        "GPU-a",
        "nvidia.com/gpu=GPU-a",
    ]


def test_a_device_in_no_cdi_spec_triggers_one_refresh(tmp_path: Path) -> None:
    from noded.runtime.containerd._cdi import device_edits
    from tide.api.errors import FailedPrecondition

    old, own = tmp_path / "etc", tmp_path / "own"
    old.mkdir()
    own.mkdir()
    spec = {"kind": "nvidia.com/gpu", "devices": [{"name": "GPU-a", "containerEdits": {"env": ["A=1"]}}]}
    (old / "nvidia.json").write_text(json.dumps(spec))
    # The refresh "cuts" MIG-b into the spec it writes, and counts its runs.
    fresh = {"kind": "nvidia.com/gpu", "devices": [{"name": "MIG-b", "containerEdits": {"env": ["B=1"]}}]}
    script = (
        "import json, sys, pathlib\n"
        f"pathlib.Path({str(own / 'nvidia.json')!r}).write_text(json.dumps({fresh!r}))\n"
        f"open({str(tmp_path / 'runs')!r}, 'a').write('x')\n"
    )
    refresh = [sys.executable, "-c", script]
    dirs = [str(own), str(old)]
    assert device_edits(["GPU-a"], dirs, refresh=refresh).env == ["A=1"]
    assert not (tmp_path / "runs").exists()  # every device known: no refresh
    assert device_edits(["GPU-a", "MIG-b"], dirs, refresh=refresh).env == ["A=1", "B=1"]
    assert device_edits(["MIG-b"], dirs, refresh=refresh).env == ["B=1"]
    assert (tmp_path / "runs").read_text() == "x"
    with pytest.raises(FailedPrecondition, match="MIG-gone"):
        device_edits(["MIG-gone"], dirs, refresh=refresh)
    with pytest.raises(FailedPrecondition, match="regenerating the CDI specs failed"):
        device_edits(["MIG-gone"], dirs, refresh=[sys.executable, "-c", "raise SystemExit(3)"])
    assert device_edits(["MIG-gone", "GPU-a"], dirs, simulated=True).env == ["A=1"]


def test_noded_config_selects_containerd_with_registries(tmp_path: Path) -> None:
    from noded.config import load_config, registry_auth
    from noded.main import _runtime
    from noded.runtime import RegistryAuth

    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "noded.toml").write_text(
        f"""version = 1
[runtime]
kind = "containerd"
state-dir = "{tmp_path}/state"
containerd-socket = "/tmp/c.sock"
cdi-dirs = ["{tmp_path}/cdi"]
systemd-cgroup = true

[runtime.registries."ghcr.io"]
username = "robot"
password-file = "{tmp_path}/pw"

[runtime.registries."10.0.0.5:5000"]
insecure = true
"""
    )
    cfg = load_config(str(tmp_path / "noded.toml"))
    assert registry_auth(cfg.runtime.registries) == {
        "ghcr.io": RegistryAuth(username="robot", password="s3cret"),
        "10.0.0.5:5000": RegistryAuth(insecure=True),
    }
    runtime = _runtime(cfg)
    assert runtime.name == "containerd"
    c = runtime.config
    assert (c.socket, c.cdi_dirs, c.systemd_cgroup, c.cgroup_parent) == (
        "/tmp/c.sock",
        [f"{tmp_path}/state/cdi", f"{tmp_path}/cdi"],  # its own refreshed spec first
        True,
        "system.slice",
    )
    assert c.cdi_refresh[:3] == ["nvidia-ctk", "cdi", "generate"]
    assert "--device-name-strategy=uuid" in c.cdi_refresh
    assert f"--output={tmp_path}/state/cdi/nvidia.json" in c.cdi_refresh
    assert c.log_dir == f"{tmp_path}/state/logs" and not c.simulated_gpus


def test_noded_config_rejects_unknown_registry_keys_and_missing_secrets(tmp_path: Path) -> None:
    from noded.config import load_config, registry_auth
    from tide.api.errors import InvalidArgument

    bad = tmp_path / "bad.toml"
    bad.write_text('[runtime.registries."ghcr.io"]\npassword = "inline"\n')
    with pytest.raises(InvalidArgument, match="password"):
        load_config(str(bad))
    missing = tmp_path / "missing.toml"
    missing.write_text(f'[runtime.registries."ghcr.io"]\ntoken-file = "{tmp_path}/nope"\n')
    with pytest.raises(InvalidArgument, match="nope"):
        registry_auth(load_config(str(missing)).runtime.registries)


def test_tide_dev_containerd_flags_reach_the_runtime_config(tmp_path: Path) -> None:
    from noded.runtime import Mount, RegistryAuth
    from tide.dev import DevCluster, parser

    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "registries.toml").write_text(
        f'[registries."ghcr.io"]\ntoken-file = "{tmp_path}/token"\n'
        '[registries."reg.lan:5000"]\nusername = "u"\n'
    )
    argv = ["--runtime", "containerd", "--containerd-socket", "/tmp/c.sock", "--state-dir", str(tmp_path)]
    argv += ["--containerd-bind", "/usr", "--containerd-bind", "/opt/venv:/venv", "--cdi-dir", "/etc/cdi"]
    argv += ["--insecure-registry", "reg.lan:5000", "--registry-config", str(tmp_path / "registries.toml")]
    args = parser().parse_args(argv)
    config = DevCluster(args)._runtime("node-1").config
    assert config.socket == "/tmp/c.sock" and config.owner == "tide-dev-node-1"
    assert config.binds == [
        Mount(source="/usr", target="/usr", read_only=True),
        Mount(source="/opt/venv", target="/venv", read_only=True),
    ]
    assert config.registries == {
        "ghcr.io": RegistryAuth(token="tok"),
        "reg.lan:5000": RegistryAuth(username="u", insecure=True),
    }
    assert config.cdi_dirs == ["/etc/cdi"] and config.simulated_gpus
