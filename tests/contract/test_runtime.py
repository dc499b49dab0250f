"""One contract suite for every ContainerRuntime (noded/runtime/_protocol.py).

The ``harness`` fixture is parametrized over the implementations; each gives a
runtime factory (a second object on the same state is a "restarted noded"), an
image with ``marker.txt`` in its working directory, and the python to run
inside a worker.  Worker commands are small ``python -c`` programs.  Tests wait
for a worker's "ready" line in its logs before signalling it, and never assert
on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import msgspec
import pytest

from noded.runtime import (
    ContainerdConfig,
    ContainerdRuntime,
    ContainerRuntime,
    Mount,
    ProcessRuntime,
    RegistryAuth,
    ResourceLimits,
    Suspendable,
    WorkerSpec,
    WorkerStatus,
)
from noded.runtime.containerd import gen_protos
from noded.runtime.containerd._cdi import CdiSpec, ContainerEdits, plan_cdi_edits, resolve_device_nodes
from noded.runtime.containerd._oci_spec import plan_oci_spec
from noded.runtime.containerd._pull import chain_ids
from noded.runtime.containerd._registry import RegistryClient, parse_reference, select_manifest
from noded.runtime.process._runtime import EXIT_CODE_LOST, plan_launch
from tests.fixtures.containerd import ContainerdServer, containerd_missing
from tests.fixtures.oci_image import build_test_image, host_python_mounts, push_image
from tests.fixtures.registry import RegistryServer, registry_missing
from tide.api.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unauthenticated

SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"
GRACEFUL = (
    "import signal, sys, time\n"
    "def bye(*_):\n    print('bye', flush=True); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(120)\n"
)
STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\ntime.sleep(120)\n"
)


@dataclass
class Harness:
    make_runtime: Callable[[], ContainerRuntime]
    image: str
    python: str
    state: Path = Path("/nonexistent")
    mounts: list[Mount] = field(default_factory=list)
    runtimes: list[ContainerRuntime] = field(default_factory=list)
    scripts: bool = False  # write `python -c CODE` as a script: `python -u SCRIPT` is what the pool forks

    def runtime(self) -> ContainerRuntime:
        rt = self.make_runtime()
        self.runtimes.append(rt)
        return rt

    def spec(self, code: str, **kw: object) -> WorkerSpec:
        kw.setdefault("id", f"w-{uuid.uuid4().hex[:10]}")
        kw.setdefault("command", [self.python, "-c", code])
        command = list(kw["command"])  # type: ignore[call-overload]
        if self.scripts and command[:2] == [self.python, "-c"]:
            name = f"c_{hashlib.sha256(command[2].encode()).hexdigest()[:12]}.py"
            (Path(self.image.removeprefix("dir://")) / name).write_text(command[2])
            kw["command"] = [self.python, "-u", name, *command[3:]]
        return WorkerSpec(image=self.image, mounts=list(self.mounts), **kw)  # type: ignore[arg-type]


def _process_harness(tmp_path: Path, *, prewarm: bool = False) -> Harness:
    image = tmp_path / "image"
    image.mkdir()
    (image / "marker.txt").write_text("from the image\n")
    state = tmp_path / "state"

    def make() -> ProcessRuntime:
        if not prewarm:
            return ProcessRuntime(state)
        # No preloads (fast), and ready before use: a pool still starting would exec every worker.
        rt = ProcessRuntime(state, prewarm=True, prewarm_modules=())
        assert rt._pool is not None and rt._pool.wait_ready(30)
        return rt

    return Harness(
        make_runtime=make, image=f"dir://{image}", python=sys.executable, state=state, scripts=prewarm
    )


def _assert_forked(state: Path) -> None:
    """Every `python -u SCRIPT` worker of the prewarm variant was forked from the zygote."""
    for launch in state.glob("*/launch.json"):
        if json.loads(launch.read_text())["argv"][1:2] == ["-u"]:
            assert "prewarm: forked" in (launch.parent / "shim.log").read_text(), launch.parent


@dataclass
class ContainerdEnv:
    server: ContainerdServer
    registry: RegistryServer
    image: str
    cdi_dir: Path

    def config(self, tmp_path: Path, **kw: Any) -> ContainerdConfig:
        kw.setdefault("owner", f"test-{uuid.uuid4().hex[:8]}")  # list() sees only this test's workers
        kw.setdefault("registries", {self.registry.host: RegistryAuth(insecure=True)})
        return ContainerdConfig(
            socket=self.server.socket,
            runc_root=self.server.runc_root,
            log_dir=str(tmp_path / "logs"),
            cdi_dirs=[str(self.cdi_dir)],
            **kw,
        )


FAKE_GPUS = {
    "GPU-11111111-2222": "/dev/nvidia0",
    "MIG-33333333-4444": "/dev/nvidia1",
    "GPU-99999999-0000": "/dev/nvidia2",
}


def write_fake_cdi(cdi_dir: Path) -> None:
    """A CDI spec shaped like nvidia-ctk's, whose device nodes are really /dev/null."""
    cdi_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "cdiVersion": "0.5.0",
        "kind": "nvidia.com/gpu",
        "devices": [
            {"name": name, "containerEdits": {"deviceNodes": [{"path": path, "hostPath": "/dev/null"}]}}
            for name, path in FAKE_GPUS.items()
        ],
        "containerEdits": {
            "env": ["NVIDIA_VISIBLE_DEVICES=void", "FROM_CDI=yes"],
            "deviceNodes": [{"path": "/dev/nvidiactl", "hostPath": "/dev/null"}],
        },
    }
    (cdi_dir / "nvidia.json").write_text(json.dumps(spec))


@pytest.fixture(scope="session")
def containerd_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerdEnv]:
    reason = containerd_missing() or registry_missing()
    if reason:
        pytest.skip(reason)
    try:
        gen_protos.generate(Path(gen_protos.PROTO_ROOT))  # a no-op when the stubs are current
    except gen_protos.ProtoGenError as e:
        pytest.skip(str(e))
    server, registry = ContainerdServer(), RegistryServer()
    try:
        server.start()
        registry.start()
        root = tmp_path_factory.mktemp("containerd-env")
        image = build_test_image(root / "layout")
        push_image(image, registry.url, "tide/worker", "1")
        push_image(image, registry.url, "tide/worker", "multi", index=True)
        write_fake_cdi(root / "cdi")
        yield ContainerdEnv(server, registry, f"{registry.host}/tide/worker:1", root / "cdi")
    finally:
        registry.stop()
        server.stop()


def _containerd_harness(env: ContainerdEnv, tmp_path: Path) -> Harness:
    config = env.config(tmp_path)
    mounts = [Mount(source=src, target=dst, read_only=True) for src, dst in host_python_mounts()]
    return Harness(
        make_runtime=lambda: ContainerdRuntime(config), image=env.image, python=sys.executable, mounts=mounts
    )


@pytest.fixture(
    params=["process", "process+prewarm", pytest.param("containerd", marks=pytest.mark.integration)]
)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "containerd":
        h = _containerd_harness(request.getfixturevalue("containerd_env"), tmp_path)
    else:
        h = _process_harness(tmp_path, prewarm=request.param == "process+prewarm")
    yield h
    if h.scripts:
        _assert_forked(h.state)
    # Leave nothing running: workers outlive runtimes by design.
    cleanup = h.make_runtime()
    for st in await cleanup.list():
        if st.state == "running":
            await cleanup.stop(st.id, grace=0)
        await cleanup.delete(st.id)
    for rt in [*h.runtimes, cleanup]:
        await rt.close()


@pytest.fixture
def runtime(harness: Harness) -> ContainerRuntime:
    return harness.runtime()


async def wait_for_line(rt: ContainerRuntime, worker_id: str, text: str) -> list[str]:
    async with asyncio.timeout(30):
        while True:
            lines = await rt.logs(worker_id, tail=1000)
            if text in lines:
                return lines
            await asyncio.sleep(0.02)


async def run_to_exit(rt: ContainerRuntime, spec: WorkerSpec) -> tuple[WorkerStatus, list[str]]:
    await rt.create(spec)
    await rt.start(spec.id)
    status = await rt.wait(spec.id)
    return status, await rt.logs(spec.id, tail=1000)


async def test_runtime_create_is_idempotent(harness: Harness, runtime: ContainerRuntime) -> None:
    spec = harness.spec("pass", labels={"tide.endpoint": "ep1"})
    await runtime.create(spec)
    await runtime.create(spec)
    status = await runtime.status(spec.id)
    assert (status.state, status.labels, status.exit_code) == ("created", {"tide.endpoint": "ep1"}, None)
    with pytest.raises(AlreadyExists):
        await runtime.create(harness.spec("print(1)", id=spec.id))


async def test_runtime_unknown_worker_is_not_found(runtime: ContainerRuntime) -> None:
    for call in (runtime.status, runtime.start, runtime.wait, runtime.logs):
        with pytest.raises(NotFound):
            await call("no-such-worker")
    await runtime.delete("no-such-worker")  # idempotent


async def test_runtime_runs_to_its_exit_code(harness: Harness, runtime: ContainerRuntime) -> None:
    status, lines = await run_to_exit(runtime, harness.spec("print('hello'); raise SystemExit(3)"))
    assert (status.state, status.exit_code) == ("exited", 3)
    assert status.exited_at >= status.started_at > 0
    assert lines == ["hello"]
    assert await runtime.status(status.id) == status
    with pytest.raises(FailedPrecondition):
        await runtime.start(status.id)


async def test_runtime_start_is_idempotent_and_kill_gives_128_plus_signal(
    harness: Harness, runtime: ContainerRuntime
) -> None:
    spec = harness.spec(SLEEPER)
    await runtime.create(spec)
    first = await runtime.start(spec.id)
    assert first.state == "running" and first.pid > 0
    assert (await runtime.start(spec.id)).pid == first.pid
    await wait_for_line(runtime, spec.id, "ready")
    await runtime.kill(spec.id, signal.SIGKILL)
    status = await runtime.wait(spec.id)
    assert (status.state, status.exit_code) == ("exited", 128 + signal.SIGKILL)
    with pytest.raises(FailedPrecondition):
        await runtime.kill(spec.id, signal.SIGKILL)


async def test_runtime_stop_lets_a_handler_finish(harness: Harness, runtime: ContainerRuntime) -> None:
    spec = harness.spec(GRACEFUL)
    await runtime.create(spec)
    await runtime.start(spec.id)
    await wait_for_line(runtime, spec.id, "ready")
    status = await runtime.stop(spec.id, grace=60)
    assert (status.state, status.exit_code) == ("exited", 0)
    assert (await runtime.logs(spec.id))[-1] == "bye"
    assert await runtime.stop(spec.id, grace=0) == status  # idempotent on exited workers


async def test_runtime_stop_escalates_to_sigkill(harness: Harness, runtime: ContainerRuntime) -> None:
    spec = harness.spec(STUBBORN)
    await runtime.create(spec)
    await runtime.start(spec.id)
    await wait_for_line(runtime, spec.id, "ready")
    status = await runtime.stop(spec.id, grace=0.2)
    assert (status.state, status.exit_code) == ("exited", 128 + signal.SIGKILL)


async def test_runtime_many_waiters_see_one_exit(harness: Harness, runtime: ContainerRuntime) -> None:
    spec = harness.spec(SLEEPER)
    await runtime.create(spec)
    await runtime.start(spec.id)
    waiters = [asyncio.ensure_future(runtime.wait(spec.id)) for _ in range(3)]
    await wait_for_line(runtime, spec.id, "ready")
    await runtime.kill(spec.id, signal.SIGKILL)
    results = await asyncio.gather(*waiters)
    assert {r.exit_code for r in results} == {137}


async def test_runtime_env_and_cwd(harness: Harness, runtime: ContainerRuntime) -> None:
    code = (
        "import os; print(os.environ['GREETING']); print(open('marker.txt').read().strip()); "
        "print(os.environ['PATH'] != '')"
    )
    status, lines = await run_to_exit(runtime, harness.spec(code, env={"GREETING": "hi there"}))
    assert status.exit_code == 0
    assert lines == ["hi there", "from the image", "True"]


async def test_runtime_args_follow_command(harness: Harness, runtime: ContainerRuntime) -> None:
    spec = harness.spec(
        "", command=[harness.python, "-c", "import sys; print(sys.argv[1:])"], args=["a", "b c"]
    )
    status, lines = await run_to_exit(runtime, spec)
    assert (status.exit_code, lines) == (0, ["['a', 'b c']"])


async def test_runtime_devices_env(harness: Harness, runtime: ContainerRuntime) -> None:
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'] + '|' + os.environ['NVIDIA_VISIBLE_DEVICES'])"
    # The endpoint's env cannot widen what the worker sees.
    _, with_devices = await run_to_exit(
        runtime,
        harness.spec(
            code, devices=["GPU-11111111-2222", "MIG-33333333-4444"], env={"CUDA_VISIBLE_DEVICES": "all"}
        ),
    )
    assert with_devices == ["GPU-11111111-2222,MIG-33333333-4444|GPU-11111111-2222,MIG-33333333-4444"]
    _, without = await run_to_exit(runtime, harness.spec(code))
    assert without == ["|void"]


async def test_runtime_logs_tail(harness: Harness, runtime: ContainerRuntime) -> None:
    # stdout and stderr reach the log through separate pipes (containerd's shim
    # copies each on its own), so give stdout time to drain before stderr writes.
    spec = harness.spec(
        "import sys, time\nfor i in range(1, 51): print(i, flush=True)\n"
        "time.sleep(0.3)\nprint('err', file=sys.stderr)"
    )
    status, _ = await run_to_exit(runtime, spec)
    assert status.exit_code == 0
    assert await runtime.logs(spec.id, tail=3) == ["49", "50", "err"]
    assert len(await runtime.logs(spec.id)) == 51
    assert await runtime.logs(spec.id, tail=0) == []


async def test_runtime_restarted_noded_adopts_running_workers(
    harness: Harness, runtime: ContainerRuntime
) -> None:
    labels = {"tide.owner": "node-1", "tide.endpoint": "ep", "tide.worker": "w", "tide.revision": "7"}
    spec = harness.spec(SLEEPER, labels=labels)
    done = harness.spec("pass")
    await runtime.create(spec)
    running = await runtime.start(spec.id)
    await run_to_exit(runtime, done)
    await wait_for_line(runtime, spec.id, "ready")
    await runtime.close()  # "noded exits"

    adopted = harness.runtime()
    by_id = {s.id: s for s in await adopted.list()}
    assert by_id[spec.id].state == "running"
    assert (by_id[spec.id].labels, by_id[spec.id].pid) == (labels, running.pid)
    assert (by_id[done.id].state, by_id[done.id].exit_code) == ("exited", 0)
    waiter = asyncio.ensure_future(adopted.wait(spec.id))
    stopped = await adopted.stop(spec.id, grace=0)
    assert stopped.state == "exited" and stopped.exit_code is not None
    assert await waiter == stopped


async def test_runtime_workers_survive_close(harness: Harness, runtime: ContainerRuntime) -> None:
    spec = harness.spec("import time\nfor i in range(100000):\n    print(i, flush=True); time.sleep(0.01)")
    await runtime.create(spec)
    await runtime.start(spec.id)
    await wait_for_line(runtime, spec.id, "3")
    await runtime.close()
    later = harness.runtime()
    assert (await later.status(spec.id)).state == "running"
    await wait_for_line(later, spec.id, "20")  # still producing output after the close
    await later.stop(spec.id, grace=0)


async def test_runtime_delete(harness: Harness, runtime: ContainerRuntime) -> None:
    spec = harness.spec(SLEEPER)
    await runtime.create(spec)
    await runtime.start(spec.id)
    with pytest.raises(FailedPrecondition):
        await runtime.delete(spec.id)
    await runtime.stop(spec.id, grace=0)
    await runtime.delete(spec.id)
    await runtime.delete(spec.id)
    with pytest.raises(NotFound):
        await runtime.status(spec.id)
    assert spec.id not in {s.id for s in await runtime.list()}
    await runtime.create(spec)  # the id can be reused
    assert (await runtime.status(spec.id)).state == "created"


async def test_runtime_delete_created_and_wait_unstarted(harness: Harness, runtime: ContainerRuntime) -> None:
    spec = harness.spec("pass")
    await runtime.create(spec)
    with pytest.raises(FailedPrecondition):
        await runtime.wait(spec.id)
    await runtime.delete(spec.id)
    with pytest.raises(NotFound):
        await runtime.status(spec.id)


async def test_runtime_missing_binary_fails_start(harness: Harness, runtime: ContainerRuntime) -> None:
    spec = harness.spec("", command=["/no/such/binary"])
    await runtime.create(spec)
    with pytest.raises(FailedPrecondition):
        await runtime.start(spec.id)


async def test_runtime_rejects_bad_ids(harness: Harness, runtime: ContainerRuntime) -> None:
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(InvalidArgument):
            await runtime.create(harness.spec("pass", id=bad))


# -- ProcessRuntime only ------------------------------------------------------


@pytest.fixture
async def process_runtime(tmp_path: Path) -> AsyncIterator[tuple[ProcessRuntime, Harness]]:
    h = _process_harness(tmp_path)
    rt = ProcessRuntime(tmp_path / "state")
    yield rt, h
    for st in await rt.list():
        if st.state == "running":
            await rt.stop(st.id, grace=0)


async def test_process_runtime_rejects_other_image_schemes(
    process_runtime: tuple[ProcessRuntime, Harness],
) -> None:
    rt, h = process_runtime
    with pytest.raises(InvalidArgument, match="'docker'"):
        await rt.create(WorkerSpec(id="w1", image="docker://busybox", command=["true"]))
    with pytest.raises(InvalidArgument, match="does not exist"):
        await rt.create(WorkerSpec(id="w1", image="dir:///no/such/dir", command=["true"]))
    with pytest.raises(InvalidArgument, match="command"):
        await rt.create(WorkerSpec(id="w1", image=h.image))


async def test_process_runtime_default_sigterm_is_143_and_the_shim_forwards_it(
    process_runtime: tuple[ProcessRuntime, Harness],
) -> None:
    rt, h = process_runtime
    spec = h.spec(SLEEPER)
    await rt.create(spec)
    await rt.start(spec.id)
    await wait_for_line(rt, spec.id, "ready")
    state = msgspec.json.decode((h.state / spec.id / "state.json").read_bytes())
    os.kill(state["shim_pid"], signal.SIGTERM)  # an operator signals the shim
    status = await rt.wait(spec.id)
    assert status.exit_code == 128 + signal.SIGTERM


async def test_process_runtime_detects_a_dead_shim(process_runtime: tuple[ProcessRuntime, Harness]) -> None:
    rt, h = process_runtime
    spec = h.spec(SLEEPER)
    await rt.create(spec)
    await rt.start(spec.id)
    await wait_for_line(rt, spec.id, "ready")
    state = msgspec.json.decode((h.state / spec.id / "state.json").read_bytes())
    os.kill(state["shim_pid"], signal.SIGKILL)
    assert (await rt.status(spec.id)).state == "running"  # its worker lives on, adopted by pid
    os.killpg(state["pid"], signal.SIGKILL)
    status = await rt.wait(spec.id)
    assert (status.state, status.exit_code) == ("exited", EXIT_CODE_LOST)


def test_plan_launch_env_order_and_cwd(tmp_path: Path) -> None:
    spec = WorkerSpec(
        id="w1",
        image="dir:///srv/img",
        command=["python"],
        args=["h.py"],
        env={"PATH": "/opt/bin", "NVIDIA_VISIBLE_DEVICES": "all", "X": "1"},
        devices=["GPU-1"],
    )
    launch = plan_launch(spec, worker_dir="/state/w1")
    assert (launch.argv, launch.cwd, launch.log_path) == (
        ["python", "h.py"],
        "/srv/img",
        "/state/w1/output.log",
    )
    assert launch.env == {
        "PATH": "/opt/bin",
        "LANG": "C.UTF-8",
        "HOME": "/state/w1/home",
        "X": "1",
        "CUDA_VISIBLE_DEVICES": "GPU-1",
        "NVIDIA_VISIBLE_DEVICES": "GPU-1",
    }


# -- ContainerdRuntime only (real containerd) ---------------------------------


@pytest.fixture
async def ctrd(
    containerd_env: ContainerdEnv, tmp_path: Path
) -> AsyncIterator[tuple[ContainerdRuntime, Harness]]:
    h = _containerd_harness(containerd_env, tmp_path)
    rt = h.make_runtime()
    assert isinstance(rt, ContainerdRuntime)
    yield rt, h
    for st in await rt.list():
        if st.state == "running":
            await rt.stop(st.id, grace=0)
        await rt.delete(st.id)
    await rt.close()


def _read_limits(worker_id: str) -> tuple[str, str, str]:
    """(memory, pids, "quota period") from the worker's cgroup, v1 or v2."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # unified hierarchy
        d = Path("/sys/fs/cgroup/tide", worker_id)
        return (d / "memory.max").read_text(), (d / "pids.max").read_text(), (d / "cpu.max").read_text()
    v1 = Path("/sys/fs/cgroup")
    cpu = [(v1 / "cpu/tide" / worker_id / f"cpu.cfs_{k}_us").read_text().strip() for k in ("quota", "period")]
    return (
        (v1 / "memory/tide" / worker_id / "memory.limit_in_bytes").read_text(),
        (v1 / "pids/tide" / worker_id / "pids.max").read_text(),
        " ".join(cpu),
    )


@pytest.mark.integration
async def test_containerd_limits_are_in_the_workers_cgroup(ctrd: tuple[ContainerdRuntime, Harness]) -> None:
    rt, h = ctrd
    spec = h.spec(SLEEPER, limits=ResourceLimits(cpus=0.5, memory_bytes=256 << 20, pids=64))
    await rt.create(spec)
    await rt.start(spec.id)
    await wait_for_line(rt, spec.id, "ready")
    limits = await asyncio.to_thread(_read_limits, spec.id)
    assert tuple(v.strip() for v in limits) == (str(256 << 20), "64", "50000 100000")


@pytest.mark.integration
async def test_containerd_worker_sees_only_its_devices(ctrd: tuple[ContainerdRuntime, Harness]) -> None:
    rt, h = ctrd
    code = (
        "import os\n"
        "print(sorted(n for n in os.listdir('/dev') if n.startswith('nvidia')))\n"
        "print(sorted(os.listdir('/dev')))\n"
        "open('/dev/nvidia0', 'wb').write(b'x'); print('gpu ok')\n"
        "try:\n    os.mknod('/dev/sneaky', 0o600 | 0o20000, os.makedev(1, 3)); print('mknod ok')\n"
        "except OSError as e:\n    print('mknod', e.errno)\n"
    )
    status, lines = await run_to_exit(rt, h.spec(code, devices=["GPU-11111111-2222"]))
    assert status.exit_code == 0, lines
    assert lines[0] == "['nvidia0', 'nvidiactl']"  # not nvidia1/nvidia2, which exist in the CDI spec
    host_only = {"vda", "sda", "nvme0n1", "kmsg", "mem", "loop0"} & set(eval(lines[1]))
    assert host_only == set()
    assert lines[2:] == ["gpu ok", "mknod 1"]  # EPERM: no CAP_MKNOD


@pytest.mark.integration
async def test_containerd_read_only_rootfs_and_mounts(
    ctrd: tuple[ContainerdRuntime, Harness], tmp_path: Path
) -> None:
    rt, h = ctrd
    data = tmp_path / "data"
    data.mkdir()
    code = (
        "import os\n"
        "for p in ('/app/x', '/data/x'):\n"
        "    try:\n        open(p, 'w').write('x'); print(p, 'ok')\n"
        "    except OSError as e:\n        print(p, e.errno)\n"
    )
    spec = h.spec(code, read_only_rootfs=True)
    spec = msgspec.structs.replace(spec, mounts=[*spec.mounts, Mount(source=str(data), target="/data")])
    status, lines = await run_to_exit(rt, spec)
    assert (status.exit_code, lines) == (0, ["/app/x 30", "/data/x ok"])  # 30 = EROFS
    assert (data / "x").read_text() == "x"


@pytest.mark.integration
async def test_containerd_runs_a_runpod_handler_module(ctrd: tuple[ContainerdRuntime, Harness]) -> None:
    rt, h = ctrd
    status, lines = await run_to_exit(
        rt, h.spec("import runpod.serverless; print('runpod', runpod.__version__)")
    )
    assert status.exit_code == 0, lines
    assert lines[-1].startswith("runpod ")


@pytest.mark.integration
async def test_containerd_pulls_through_an_index(ctrd: tuple[ContainerdRuntime, Harness]) -> None:
    rt, h = ctrd
    spec = msgspec.structs.replace(
        h.spec("print(open('marker.txt').read().strip())"), image=h.image.replace(":1", ":multi")
    )
    status, lines = await run_to_exit(rt, spec)
    assert (status.exit_code, lines) == (0, ["from the image"])


@pytest.mark.integration
async def test_containerd_pulls_with_basic_auth(containerd_env: ContainerdEnv, tmp_path: Path) -> None:
    pytest.importorskip("bcrypt", reason="the registry's htpasswd file needs bcrypt")
    reg = RegistryServer(basic_auth=("tide", "s3cret"))
    reg.start()
    try:
        push_image(build_test_image(), reg.url, "private/worker", "1", auth=("tide", "s3cret"))
        mounts = [Mount(source=s, target=d, read_only=True) for s, d in host_python_mounts()]
        spec = WorkerSpec(
            id=f"w-{uuid.uuid4().hex[:10]}",
            image=f"{reg.host}/private/worker:1",
            command=[sys.executable, "-c", "print('pulled')"],
            mounts=mounts,
        )
        for auth, expect in ((RegistryAuth(insecure=True), Unauthenticated), (None, None)):
            good = RegistryAuth(insecure=True, username="tide", password="s3cret")
            config = containerd_env.config(tmp_path, registries={reg.host: auth or good})
            rt = ContainerdRuntime(config)
            try:
                if expect is not None:
                    with pytest.raises(expect):
                        await rt.create(spec)
                    continue
                status, lines = await run_to_exit(rt, spec)
                assert (status.exit_code, lines) == (0, ["pulled"])
                await rt.delete(spec.id)
            finally:
                await rt.close()
    finally:
        reg.stop()


# -- pure pieces of the containerd runtime ------------------------------------


def test_parse_reference() -> None:
    assert parse_reference("busybox").name == "docker.io/library/busybox:latest"
    ref = parse_reference("127.0.0.1:5000/a/b:v1")
    assert (ref.host, ref.repo, ref.reference) == ("127.0.0.1:5000", "a/b", "v1")
    pinned = parse_reference("ghcr.io/x/y@sha256:" + "a" * 64)
    assert (pinned.host, pinned.reference) == ("ghcr.io", "sha256:" + "a" * 64)
    for bad in ("dir:///x", "UPPER/case", "a@sha256:zz", ""):
        with pytest.raises(InvalidArgument):
            parse_reference(bad)


def test_chain_ids_and_select_manifest() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    import hashlib

    assert chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]
    index = {"manifests": [{"digest": "x", "platform": {"os": "linux", "architecture": "arm64"}}]}
    assert select_manifest(index, os="linux", arch="arm64")["digest"] == "x"
    with pytest.raises(NotFound):
        select_manifest(index, os="linux", arch="amd64")


def _gpu_specs() -> list[CdiSpec]:
    raw = {
        "cdiVersion": "0.5.0",
        "kind": "nvidia.com/gpu",
        "devices": [
            {
                "name": "GPU-a",
                "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0", "major": 195, "minor": 0}]},
            },
            {
                "name": "MIG-b",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/nvidia-caps/nvidia-cap21", "major": 237, "minor": 21}]
                },
            },
        ],
        "containerEdits": {
            "env": ["NVIDIA_VISIBLE_DEVICES=void"],
            "deviceNodes": [{"path": "/dev/nvidiactl", "major": 195, "minor": 255}],
            "mounts": [
                {
                    "hostPath": "/usr/lib/libcuda.so.1",
                    "containerPath": "/usr/lib/libcuda.so.1",
                    "options": ["ro", "nosuid", "bind"],
                }
            ],
            "hooks": [
                {
                    "hookName": "createContainer",
                    "path": "/usr/bin/nvidia-cdi-hook",
                    "args": ["nvidia-cdi-hook", "update-ldcache"],
                }
            ],
        },
    }
    return [msgspec.convert(raw, type=CdiSpec)]


def test_plan_oci_spec_injects_gpus_following_cdi() -> None:
    spec = WorkerSpec(
        id="w1",
        image="r/x:1",
        args=["serve"],
        env={"A": "1", "CUDA_VISIBLE_DEVICES": "all"},
        devices=["MIG-b"],
        limits=ResourceLimits(cpus=2, memory_bytes=1 << 30, pids=100),
        read_only_rootfs=True,
    )
    edits = plan_cdi_edits(_gpu_specs(), spec.devices)
    image_config = {
        "Entrypoint": ["python", "-m"],
        "Cmd": ["old"],
        "Env": ["A=0", "B=2"],
        "WorkingDir": "/srv",
    }
    oci = plan_oci_spec(
        spec,
        image_config,
        edits=edits,
        devices=resolve_device_nodes(edits.device_nodes),
        cgroups_path="/tide/w1",
    )
    proc, linux = oci["process"], oci["linux"]
    assert proc["args"] == ["python", "-m", "serve"] and proc["cwd"] == "/srv" and proc["noNewPrivileges"]
    env = dict(e.split("=", 1) for e in proc["env"])
    assert (env["A"], env["B"], env["CUDA_VISIBLE_DEVICES"], env["NVIDIA_VISIBLE_DEVICES"]) == (
        "1",
        "2",
        "MIG-b",
        "MIG-b",
    )
    assert [d["path"] for d in linux["devices"]] == ["/dev/nvidia-caps/nvidia-cap21", "/dev/nvidiactl"]
    allowed = [(r["major"], r["minor"]) for r in linux["resources"]["devices"] if r["allow"]]
    assert linux["resources"]["devices"][0] == {"allow": False, "access": "rwm"} and allowed == [
        (237, 21),
        (195, 255),
    ]
    assert linux["resources"]["memory"] == {"limit": 1 << 30}
    assert linux["resources"]["cpu"] == {"quota": 200000, "period": 100000}
    assert linux["resources"]["pids"] == {"limit": 100}
    assert {"type": "network"} not in linux["namespaces"] and oci["root"]["readonly"]
    assert "/usr/lib/libcuda.so.1" in [m["destination"] for m in oci["mounts"]]
    assert oci["hooks"]["createContainer"][0]["args"] == ["nvidia-cdi-hook", "update-ldcache"]
    assert (
        "CAP_SYS_ADMIN" not in proc["capabilities"]["bounding"]
        and "CAP_NET_RAW" not in proc["capabilities"]["bounding"]
    )
    with pytest.raises(FailedPrecondition, match="GPU-zzz"):
        plan_cdi_edits(_gpu_specs(), ["GPU-zzz"])


def test_plan_oci_spec_network_none_and_no_command() -> None:
    spec = WorkerSpec(id="w1", image="r/x:1")
    oci = plan_oci_spec(
        spec, {"Cmd": ["run"]}, edits=ContainerEdits(), devices=[], cgroups_path="/t/w1", network="none"
    )
    assert {"type": "network"} in oci["linux"]["namespaces"] and oci["process"]["args"] == ["run"]
    with pytest.raises(InvalidArgument):
        plan_oci_spec(spec, {}, edits=ContainerEdits(), devices=[], cgroups_path="/t/w1")


def test_gen_protos_rewrite_strips_go_options() -> None:
    text = (
        'import weak "gogoproto/gogo.proto";\n'
        'import "github.com/containerd/containerd/api/types/mount.proto";\n'
        'option go_package = "x";\nmessage M {\n'
        '\tstring d = 1 [(gogoproto.customtype) = "a.B", (gogoproto.nullable) = false];\n'
        "\toption (gogoproto.goproto_stringer) = false;\n}\n"
    )
    out = gen_protos.rewrite(text)
    assert "gogo" not in out and "go_package" not in out
    assert 'import "noded/runtime/containerd/_gen/api/types/mount.proto";' in out and "string d = 1;" in out


async def test_registry_client_follows_a_bearer_challenge() -> None:
    """Token auth as Docker Hub and GHCR do it: 401 + realm, token for basic credentials, retry."""
    from aiohttp import web

    seen: list[str] = []

    async def token(request: web.Request) -> web.Response:
        seen.append(
            f"{request.query['scope']} {request.query['service']} {request.headers.get('Authorization')}"
        )
        return web.json_response({"token": "t0k"})

    async def manifest(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer t0k":
            challenge = f'Bearer realm="{base}/token",service="reg",scope="repository:a/b:pull"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(
            body=b'{"mediaType": "x"}', content_type="application/vnd.oci.image.manifest.v1+json"
        )

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/v2/a/b/manifests/1", manifest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host = f"127.0.0.1:{runner.addresses[0][1]}"
    base = f"http://{host}"
    try:
        async with aiohttp.ClientSession() as session:
            auth = {host: RegistryAuth(insecure=True, username="u", password="p")}
            client = RegistryClient(session, auth)
            ref = parse_reference(f"{host}/a/b:1")
            assert await client.manifest(ref, "1") == (
                "application/vnd.oci.image.manifest.v1+json",
                b'{"mediaType": "x"}',
            )
            await client.manifest(ref, "1")  # the token is reused
        assert seen == ["repository:a/b:pull reg Basic dTpw"]
    finally:
        await runner.cleanup()


# -- suspend / resume (issue 16): freeze in place, thaw with the same pid and memory ---------------

TICKER = (
    "import sys, time\n"
    "print('ready', flush=True)\n"
    "n = 0\n"
    "while True:\n"
    "    n += 1\n"
    "    print(f'tick {n}', flush=True)\n"
    "    time.sleep(0.02)\n"
)


def _ticks(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("tick ")]


async def test_runtime_suspend_freezes_in_place_and_resume_continues(
    harness: Harness, runtime: ContainerRuntime
) -> None:
    rt = cast(Suspendable, runtime)
    spec = harness.spec(TICKER)
    await runtime.create(spec)
    started = await runtime.start(spec.id)
    await wait_for_line(runtime, spec.id, "tick 3")
    frozen = await rt.suspend(spec.id)
    assert (frozen.state, frozen.pid) == ("suspended", started.pid)
    assert frozen.rss_bytes > 0
    assert await rt.suspend(spec.id) == await runtime.status(spec.id)  # idempotent
    before = _ticks(await runtime.logs(spec.id, tail=1000))
    await asyncio.sleep(0.3)  # frozen: not one more tick (a behaviour check; it can only pass late)
    assert _ticks(await runtime.logs(spec.id, tail=1000)) == before
    # A new runtime on the same state (noded restarted) adopts it as suspended, and resumes it.
    adopted = cast(Suspendable, harness.runtime())
    assert (await cast(ContainerRuntime, adopted).status(spec.id)).state == "suspended"
    thawed = await adopted.resume(spec.id)
    assert (thawed.state, thawed.pid) == ("running", started.pid)
    await wait_for_line(runtime, spec.id, f"tick {before[-1] + 2}")
    ticks = _ticks(await runtime.logs(spec.id, tail=1000))
    assert ticks == list(range(1, len(ticks) + 1))  # one process counting on: nothing restarted
    await runtime.stop(spec.id, grace=0)


async def test_runtime_worker_killed_or_stopped_while_suspended_exits(
    harness: Harness, runtime: ContainerRuntime
) -> None:
    rt = cast(Suspendable, runtime)
    for how in ("killed", "stopped"):
        spec = harness.spec(GRACEFUL if how == "stopped" else SLEEPER)
        await runtime.create(spec)
        started = await runtime.start(spec.id)
        await wait_for_line(runtime, spec.id, "ready")
        await rt.suspend(spec.id)
        if how == "killed":  # from outside (the OOM killer, an operator)
            os.kill(started.pid, signal.SIGKILL)
            # The v2 freezer lets SIGKILL through; runc's v1 freezer holds it until a thaw, so the
            # attempt to resume is what ends it there.  Either way it exits and is replaced.
            with contextlib.suppress(FailedPrecondition):
                await rt.resume(spec.id)
            status = await runtime.wait(spec.id)
            assert (status.state, status.exit_code) == ("exited", 128 + signal.SIGKILL)
        else:  # stop thaws it first, so its SIGTERM handler runs
            status = await runtime.stop(spec.id, grace=60)
            assert (status.state, status.exit_code) == ("exited", 0)
            assert (await runtime.logs(spec.id))[-1] == "bye"
        with pytest.raises(FailedPrecondition):
            await rt.resume(spec.id)
        await runtime.delete(spec.id)
