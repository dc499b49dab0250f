"""ProcessRuntime: workers as plain processes under a shim (the embedded default, like Nomad's raw_exec).

Layout of ``state_dir``, one directory per worker::

    <state_dir>/<id>/spec.json     the WorkerSpec (written by create)
                     launch.json   argv, env, cwd, log path, cgroup (written by start, read by the shim)
                     state.json    pids, start ticks, exit code (written atomically by the shim)
                     output.log    the worker's stdout+stderr
                     shim.log      the shim's own errors
                     home/         the worker's HOME

A worker is "created" while it has no state.json, "running" while its shim or
its process is alive (pid *and* start ticks match, so a reused pid is not
mistaken for it), and "exited" once state.json has an exit code.  Everything is
on disk, so a new ``ProcessRuntime`` on the same directory adopts the workers
of an earlier noded.  Mounts and a read-only root cannot be honoured without
namespaces: they are ignored with a logged note (use containerd for isolation).

With ``prewarm=True`` a zygote that has already imported ``prewarm_modules``
(runpod's dependencies by default) forks the shim and the worker of every
``python [-uBsEO] SCRIPT ARGS`` launch (``python``, ``python3`` or this
runtime's interpreter path; ``_pyargv.py``) instead of a fresh interpreter
executing it: the same files, pids, signals and exit codes, minus the imports
(``_pool.py``, ``_zygote.py``).  ``-O``/``-OO`` launches fork from a second
zygote started at that level on first use.  Other launches, and all of them
while their zygote is starting or gone, are exec'd.  ``python``/``python3`` in
a command mean this runtime's interpreter on both paths.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, final
from urllib.parse import urlsplit

import msgspec

from noded.runtime._common import BASE_ENV, check_worker_id, device_env, tail_lines
from noded.runtime._cuda_checkpoint import CudaCheckpoint
from noded.runtime._protocol import WorkerSpec, WorkerStatus
from noded.runtime.fastworker import INJECT_DIR, inject_env
from noded.runtime.process import _cgroup, _suspend
from noded.runtime.process._pool import DEFAULT_PREWARM_MODULES, PrewarmPool
from noded.runtime.process._pyargv import ALIASES, Fork, plan_python_launch
from noded.runtime.process._shim import proc_state, write_json_atomic
from tide.api.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound

__all__ = ["ProcessRuntime", "plan_launch"]

log = logging.getLogger(__name__)

_SHIM = str(Path(__file__).with_name("_shim.py"))
# Exit code recorded when a shim died (SIGKILL, OOM killer) without recording its worker's exit.
EXIT_CODE_LOST = 255


class Launch(msgspec.Struct, frozen=True, kw_only=True):
    """What the shim runs; decided here so the shim stays dumb."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: str
    cgroup_dir: str = ""


class _ShimState(msgspec.Struct, frozen=True, kw_only=True):
    shim_pid: int = 0
    shim_start: int = 0
    pid: int = 0
    pid_start: int = 0
    started_at: float = 0.0
    exit_code: int | None = None
    exited_at: float = 0.0


class _Suspended(msgspec.Struct, frozen=True, kw_only=True):
    """``suspended.json``: present while the worker is frozen (so a new noded adopts it as such)."""

    since: float
    how: str  # "cgroup" | "sigstop"
    cgroup_dir: str = ""
    gpu_checkpointed: bool = False


def image_dir(image: str) -> str:
    """The directory of a ``dir:///abs/path`` image; InvalidArgument for any other scheme."""
    parts = urlsplit(image)
    if parts.scheme != "dir":
        raise InvalidArgument(
            f"the process runtime runs only dir:///abs/path images, not scheme {parts.scheme!r} ({image!r})"
        )
    if parts.netloc or not parts.path.startswith("/"):
        raise InvalidArgument(f"image {image!r}: write dir:///abs/path (three slashes, absolute path)")
    return parts.path


def plan_launch(
    spec: WorkerSpec, *, worker_dir: str, cgroup_dir: str = "", python: str = "", fast_worker: bool = False
) -> Launch:
    """Pure: the argv, env and cwd of a worker.  Device variables win over the spec's env.
    With ``python``, a leading ``python``/``python3`` means that interpreter (as in noded's agent).
    With ``fast_worker``, the fast worker's directory leads PYTHONPATH unless the spec's env says
    TIDE_FAST_WORKER=0 (``noded.runtime.fastworker``)."""
    argv = [*spec.command, *spec.args]
    if not argv:
        raise InvalidArgument(f"worker {spec.id}: dir images have no default command; set command or args")
    if python and argv[0] in ALIASES:
        argv[0] = python
    env = {**BASE_ENV, "HOME": os.path.join(worker_dir, "home"), **spec.env, **device_env(spec.devices)}
    env = inject_env(env, INJECT_DIR, node_enabled=fast_worker)
    return Launch(
        argv=argv,
        env=env,
        cwd=image_dir(spec.image),
        log_path=os.path.join(worker_dir, "output.log"),
        cgroup_dir=cgroup_dir,
    )


def _alive(pid: int, start_ticks: int) -> bool:
    if pid <= 0:
        return False
    state = proc_state(pid)
    return state is not None and state[1] == start_ticks and state[0] != "Z"


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _wait_gone(pid: int, start_ticks: int) -> None:
    """Return once the process has exited: a pidfd wakes us (no polling) where the kernel has them."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd (old kernel or seccomp): fall back to a short sleep loop
        while _alive(pid, start_ticks):  # noqa: ASYNC110 - nothing to wait on but the pid
            await asyncio.sleep(0.05)
        return
    try:
        if not _alive(pid, start_ticks):  # the pid was reused before we opened it
            return
        loop = asyncio.get_running_loop()
        gone = loop.create_future()
        loop.add_reader(fd, _resolve, gone)
        try:
            await gone
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


@final
class ProcessRuntime:
    """Workers as local processes; see the module docstring for the on-disk contract."""

    name = "process"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        python: str = sys.executable,
        prewarm: bool = False,
        prewarm_modules: Sequence[str] = DEFAULT_PREWARM_MODULES,
        cuda_checkpoint: CudaCheckpoint | None = None,
        fast_worker: bool = True,
    ) -> None:
        self._fast_worker = fast_worker  # issue 17: event-driven waits in the runpod SDK's loop
        self._cuda = cuda_checkpoint or CudaCheckpoint.find()
        self._root = Path(state_dir)
        self._root.mkdir(parents=True, exist_ok=True)
        self._python = python
        self._locks: dict[str, asyncio.Lock] = {}
        self._cgroups: _cgroup.Cgroup2 | None = None  # detected on first use: it writes to /sys
        # Started now: its imports (seconds) overlap noded's start, not a worker's.
        self._prewarm_modules = tuple(prewarm_modules)
        self._pool = PrewarmPool(python, prewarm_modules, self._root) if prewarm else None
        self._pools: dict[tuple[str, ...], PrewarmPool] = {(): self._pool} if self._pool is not None else {}
        self._pools_lock = threading.Lock()  # _launch runs in worker threads

    def _pool_for(self, start_flags: tuple[str, ...]) -> PrewarmPool | None:
        """The zygote for launches needing these interpreter flags; started on first use
        (that launch and those before it is ready are exec'd)."""
        if self._pool is None:
            return None
        with self._pools_lock:
            pool = self._pools.get(start_flags)
            if pool is None:
                pool = PrewarmPool(self._python, self._prewarm_modules, self._root, start_flags=start_flags)
                self._pools[start_flags] = pool
            return pool

    async def prewarmed(self, timeout: float = 60.0) -> bool:
        """Wait until the prewarm pool forks workers: False without a pool, or if it failed."""
        if self._pool is None:
            return False
        return await asyncio.to_thread(self._pool.wait_ready, timeout)

    def _cgroup(self) -> _cgroup.Cgroup2:
        if self._cgroups is None:
            self._cgroups = _cgroup.Cgroup2.detect()
        return self._cgroups

    # -- on-disk state ------------------------------------------------------

    def _dir(self, worker_id: str) -> Path:
        check_worker_id(worker_id)
        return self._root / worker_id

    def _lock(self, worker_id: str) -> asyncio.Lock:
        return self._locks.setdefault(worker_id, asyncio.Lock())

    def _spec(self, worker_id: str) -> WorkerSpec:
        try:
            return msgspec.json.decode((self._dir(worker_id) / "spec.json").read_bytes(), type=WorkerSpec)
        except FileNotFoundError as e:
            raise NotFound(f"worker {worker_id} does not exist on this host") from e

    def _shim_state(self, worker_id: str) -> _ShimState | None:
        try:
            return msgspec.json.decode((self._dir(worker_id) / "state.json").read_bytes(), type=_ShimState)
        except FileNotFoundError:
            return None

    def _status(self, worker_id: str) -> WorkerStatus:
        spec = self._spec(worker_id)
        st = self._shim_state(worker_id)
        if st is None:
            return WorkerStatus(id=worker_id, state="created", labels=spec.labels)
        if st.exit_code is None and not (_alive(st.shim_pid, st.shim_start) or _alive(st.pid, st.pid_start)):
            st = self._shim_state(worker_id) or st  # it may have recorded the exit just now
            if st.exit_code is None:
                st = self._record_lost(worker_id, st)
        state: Literal["running", "suspended", "exited"] = "running" if st.exit_code is None else "exited"
        frozen = self._suspended(worker_id) if state == "running" else None
        return WorkerStatus(
            id=worker_id,
            state="suspended" if frozen else state,
            labels=spec.labels,
            pid=st.pid,
            exit_code=st.exit_code,
            started_at=st.started_at,
            exited_at=st.exited_at,
            rss_bytes=_suspend.rss_bytes(frozen.cgroup_dir, st.pid) if frozen else 0,
            suspended_at=frozen.since if frozen else 0.0,
        )

    def _suspended(self, worker_id: str) -> _Suspended | None:
        try:
            marker = (self._dir(worker_id) / "suspended.json").read_bytes()
            return msgspec.json.decode(marker, type=_Suspended)
        except FileNotFoundError:
            return None

    def _record_lost(self, worker_id: str, st: _ShimState) -> _ShimState:
        log.warning(
            "worker %s: its shim died without recording an exit; exit code %d", worker_id, EXIT_CODE_LOST
        )
        lost = msgspec.structs.replace(st, exit_code=EXIT_CODE_LOST, exited_at=st.exited_at or st.started_at)
        write_json_atomic(str(self._dir(worker_id) / "state.json"), msgspec.to_builtins(lost))
        return lost

    # -- ContainerRuntime ---------------------------------------------------

    async def create(self, spec: WorkerSpec) -> None:
        d = self._dir(spec.id)
        launch = plan_launch(spec, worker_dir=str(d))  # reject what start() could not run, now
        if not await asyncio.to_thread(os.path.isdir, launch.cwd):
            raise InvalidArgument(f"worker {spec.id}: image directory {launch.cwd} does not exist")
        if spec.mounts or spec.read_only_rootfs:
            log.info("worker %s: the process runtime ignores mounts and read_only_rootfs", spec.id)
        async with self._lock(spec.id):
            try:
                existing = self._spec(spec.id)
            except NotFound:
                (d / "home").mkdir(parents=True, exist_ok=True)
                write_json_atomic(str(d / "spec.json"), msgspec.to_builtins(spec))
                return
            if existing != spec:
                raise AlreadyExists(f"worker {spec.id} already exists with a different spec")

    async def start(self, worker_id: str) -> WorkerStatus:
        async with self._lock(worker_id):
            status = self._status(worker_id)
            if status.state == "running":
                return status
            if status.state == "exited":
                raise FailedPrecondition(f"worker {worker_id} has exited; delete it and create it again")
            d = self._dir(worker_id)
            spec = self._spec(worker_id)
            cgroup_dir = await asyncio.to_thread(self._cgroup().prepare, worker_id, spec.limits)
            launch = plan_launch(
                spec,
                worker_dir=str(d),
                cgroup_dir=cgroup_dir,
                python=self._python,
                fast_worker=self._fast_worker,
            )
            write_json_atomic(str(d / "launch.json"), msgspec.to_builtins(launch))
            line = await asyncio.to_thread(self._launch, d, launch.argv)
            if line != "ok":
                raise FailedPrecondition(f"worker {worker_id}: {line}")
            return self._status(worker_id)

    def _launch(self, d: Path, argv: list[str]) -> str:
        """Start the shim, from the prewarm pool when it takes the launch; its ready line."""
        plan = plan_python_launch(argv, self._python)
        pool = self._pool_for(plan.start_flags) if isinstance(plan, Fork) else None
        if pool is not None:
            line = pool.spawn(str(d))
            if line:
                return line
            if line is not None and (d / "state.json").exists():  # a shim ran, then died silently
                tail = "; ".join(tail_lines(str(d / "shim.log"), 5))
                return f"error: the shim exited before reporting ({tail or 'no output'})"
            # Nothing was started (the pool is not ready, or the zygote died): exec it.
        return self._spawn_shim(d)

    def _spawn_shim(self, d: Path) -> str:
        """Start the shim; return its ready line ("ok" or "error: ...")."""
        r, w = os.pipe()
        try:
            with open(d / "shim.log", "ab") as shim_log:
                proc = subprocess.Popen(
                    [self._python, "-I", _SHIM, str(d), str(w)],
                    pass_fds=(w,),
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    stdout=shim_log,
                    stderr=shim_log,
                    cwd="/",
                )
        except OSError as e:
            os.close(r)
            raise Internal(f"cannot start the worker shim {self._python}: {e}") from e
        finally:
            os.close(w)
        proc.wait()  # the shim forks and this intermediate exits at once
        with os.fdopen(r, "rb") as ready:
            line = ready.read().decode(errors="replace").strip()
        if not line:
            tail = "; ".join(tail_lines(str(d / "shim.log"), 5))
            return f"error: the shim exited before starting the worker ({tail or 'no output'})"
        return line

    async def suspend(self, worker_id: str) -> WorkerStatus:
        """Freeze a running worker in place (its GPU memory to host RAM first where possible)."""
        async with self._lock(worker_id):
            status = self._status(worker_id)
            if status.state != "running":
                if status.state == "suspended":
                    return status
                raise FailedPrecondition(f"worker {worker_id} is {status.state}, not running")
            launch = msgspec.json.decode((self._dir(worker_id) / "launch.json").read_bytes(), type=Launch)
            gpu = bool(self._spec(worker_id).devices) and await self._cuda.checkpoint(status.pid)
            try:
                how = await asyncio.to_thread(_suspend.freeze, launch.cgroup_dir, status.pid)
            except (OSError, TimeoutError) as e:
                if gpu:
                    await self._cuda.restore(status.pid)
                raise FailedPrecondition(f"worker {worker_id}: cannot freeze it: {e}") from e
            marker = _Suspended(
                since=time.time(), how=how, cgroup_dir=launch.cgroup_dir, gpu_checkpointed=gpu
            )
            write_json_atomic(str(self._dir(worker_id) / "suspended.json"), msgspec.to_builtins(marker))
            return self._status(worker_id)

    async def resume(self, worker_id: str) -> WorkerStatus:
        """Thaw a suspended worker (same pid, same memory); FailedPrecondition if it cannot run on."""
        async with self._lock(worker_id):
            status = self._status(worker_id)
            frozen = self._suspended(worker_id)
            if status.state != "suspended" or frozen is None:
                if status.state == "running":
                    return status
                raise FailedPrecondition(f"worker {worker_id} is {status.state}, not suspended")
            await asyncio.to_thread(self._thaw, worker_id, frozen, status.pid)
            restore_s = 0.0
            if frozen.gpu_checkpointed:
                t0 = time.monotonic()
                why = await self._cuda.restore(status.pid)
                if why:
                    raise FailedPrecondition(f"worker {worker_id}: {why}; stop it and start a fresh one")
                restore_s = time.monotonic() - t0
            return msgspec.structs.replace(self._status(worker_id), restore_s=restore_s)

    def _thaw(self, worker_id: str, frozen: _Suspended, pid: int) -> None:
        _suspend.thaw(frozen.how, frozen.cgroup_dir, pid)
        (self._dir(worker_id) / "suspended.json").unlink(missing_ok=True)

    async def stop(self, worker_id: str, *, grace: float = 10.0) -> WorkerStatus:
        status = self._status(worker_id)
        frozen = self._suspended(worker_id) if status.state == "suspended" else None
        if frozen is not None:  # thawed so that SIGTERM reaches its handler
            await asyncio.to_thread(self._thaw, worker_id, frozen, status.pid)
            status = self._status(worker_id)
        if status.state != "running":
            return status
        self._signal(worker_id, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await self.wait(worker_id)
        except TimeoutError:
            pass
        self._signal(worker_id, signal.SIGKILL)
        return await self.wait(worker_id)

    async def kill(self, worker_id: str, signal: int) -> None:
        status = self._status(worker_id)
        if status.state != "running":
            raise FailedPrecondition(f"worker {worker_id} is {status.state}, not running")
        self._signal(worker_id, signal)

    def _signal(self, worker_id: str, signum: int) -> None:
        st = self._shim_state(worker_id)
        # Signal the worker's group directly (not via the shim) so SIGKILL works too;
        # the start-ticks check keeps a reused pid safe.
        if st is not None and _alive(st.pid, st.pid_start):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(st.pid, signum)

    async def wait(self, worker_id: str) -> WorkerStatus:
        while True:
            status = self._status(worker_id)
            if status.state == "exited":
                return status
            if status.state == "created":
                raise FailedPrecondition(f"worker {worker_id} has not been started")
            st = self._shim_state(worker_id)
            assert st is not None
            if _alive(st.shim_pid, st.shim_start):
                await _wait_gone(st.shim_pid, st.shim_start)
            else:  # the shim is gone but its worker lives on: wait for the worker itself
                await _wait_gone(st.pid, st.pid_start)

    async def status(self, worker_id: str) -> WorkerStatus:
        return self._status(worker_id)

    async def list(self) -> builtins.list[WorkerStatus]:
        out: builtins.list[WorkerStatus] = []
        for d in sorted(self._root.iterdir()):
            if not (d / "spec.json").is_file():
                continue
            try:
                out.append(self._status(d.name))
            except (NotFound, InvalidArgument, msgspec.DecodeError) as e:
                log.warning("skipping unreadable worker state %s: %s", d, e)
        return out

    async def delete(self, worker_id: str) -> None:
        async with self._lock(worker_id):
            try:
                status = self._status(worker_id)
            except NotFound:
                return
            if status.state in ("running", "suspended"):
                raise FailedPrecondition(f"worker {worker_id} is {status.state}; stop it first")
            if (self._dir(worker_id) / "state.json").exists():  # started: it may have a cgroup
                await asyncio.to_thread(self._cgroup().remove, worker_id)
            await asyncio.to_thread(shutil.rmtree, self._dir(worker_id), ignore_errors=True)
        self._locks.pop(worker_id, None)

    async def logs(self, worker_id: str, *, tail: int = 100) -> builtins.list[str]:
        self._spec(worker_id)
        return await asyncio.to_thread(tail_lines, str(self._dir(worker_id) / "output.log"), tail)

    async def close(self) -> None:
        """Stop the prewarm pool's zygote, if any; workers and their shims keep running without us."""
        for pool in list(self._pools.values()):
            await asyncio.to_thread(pool.close)
