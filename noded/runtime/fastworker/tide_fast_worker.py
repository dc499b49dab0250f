"""Event-driven waits for the runpod SDK's worker loop (Tide's "fast worker"; issue 17).

runpod 1.12.0's ``JobScaler`` waits on timers where it could wait on events:
``get_jobs`` sleeps 1 s whenever the worker holds as many jobs as its
concurrency (after every job at the default concurrency of 1), and ``run_jobs``
polls its local queue every 0.1 s.  Tide answers job-take as a long poll, so
those timers are most of a job's latency.  This module replaces exactly those
two waits: ``get_jobs`` takes the next job the moment a slot frees, ``run_jobs``
starts a job the moment it is queued.  The timers stay as upper bounds (1 s and
0.1 s), so the loop never waits longer than the SDK's own; everything else
(job-take/job-take-batch, ping, job-done, concurrency_modifier, set_scale,
refresh_worker, progress, streaming, job-stop, logging) is the SDK's code.

The two methods are the SDK's own (MIT licence) with only the waits changed, so
the patch applies to the one runpod version it was written against
(``KNOWN_VERSION``, an exact match); any other version runs unchanged and says
why on stderr.  ``TIDE_FAST_WORKER=0`` in the worker's environment turns it off.

Loaded by ``sitecustomize.py`` beside it (an injected, read-only directory on
the worker's PYTHONPATH), it hooks the import of ``rp_scale`` and patches the
class right after the module runs.  Stdlib only, Python 3.8+: it runs in the
worker's interpreter, whatever the image ships.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

# asyncio is imported only when the patch applies: at interpreter start (sitecustomize) this
# module must not change what a worker's own imports find first.

__all__ = ["KNOWN_VERSION", "TARGET", "enabled", "install", "patch"]

KNOWN_VERSION = "1.12.0"
TARGET = "runpod.serverless.modules.rp_scale"
_OFF = frozenset({"0", "false", "no", "off"})
_MARK = "_tide_fast_worker"


def enabled(env: Any = None) -> bool:
    """Whether this worker's environment leaves the fast worker on (``TIDE_FAST_WORKER``)."""
    env = os.environ if env is None else env
    return str(env.get("TIDE_FAST_WORKER", "1")).strip().lower() not in _OFF


def _note(msg: str) -> None:
    print(f"tide fast worker: {msg}", file=sys.stderr, flush=True)


def _sdk_version() -> str:
    mod = sys.modules.get("runpod.version")
    if mod is None:
        try:
            import runpod.version as mod  # type: ignore[no-redef]
        except Exception:
            return "unknown"
    return str(getattr(mod, "__version__", "unknown"))


def patch(rp_scale: Any, version: str | None = None) -> bool:
    """Patch ``rp_scale.JobScaler`` if ``version`` (default: the installed one) is the known one.
    Returns whether it did; says why not on stderr."""
    version = _sdk_version() if version is None else version
    scaler = getattr(rp_scale, "JobScaler", None)
    if scaler is None or getattr(scaler, _MARK, False):
        return False
    if not enabled():
        _note("off (TIDE_FAST_WORKER); the SDK's worker loop runs unchanged")
        return False
    if version != KNOWN_VERSION:
        _note(
            f"runpod {version} is not the version this patch knows ({KNOWN_VERSION}); "
            "the SDK's worker loop runs unchanged (1 s waits between jobs)"
        )
        return False
    _apply(rp_scale, scaler)
    return True


class _Wakeups:
    """Per-JobScaler events, made inside the running loop (Python < 3.10 binds them at creation)."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.get_running_loop()
        self.slot = asyncio.Event()  # get_jobs: a job finished (a slot may be free) or shutdown
        self.work = asyncio.Event()  # run_jobs: a job was queued or finished, or shutdown

    def job_done(self, _task: Any) -> None:
        self.slot.set()
        self.work.set()

    def wake_all(self) -> None:
        self.slot.set()
        self.work.set()


def _wakeups(scaler: Any) -> _Wakeups:
    w = scaler.__dict__.get("_tide_wakeups")
    if w is None:
        w = scaler.__dict__["_tide_wakeups"] = _Wakeups()
    return w  # type: ignore[no-any-return]


async def _wait(event: asyncio.Event, bound: float) -> None:
    """Until ``event`` is set, at most ``bound`` seconds (the SDK's own wait)."""
    import asyncio

    if event.is_set():
        return
    timer = asyncio.get_running_loop().call_later(bound, event.set)
    try:
        await event.wait()
    finally:
        timer.cancel()


def _apply(m: Any, scaler: Any) -> None:
    import asyncio
    import contextlib

    log = m.log
    original_kill = scaler.kill_worker

    async def get_jobs(self: Any, session: Any) -> None:
        wake = _wakeups(self)
        while self.is_alive():
            await self.set_scale()

            wake.slot.clear()  # before counting: a job finishing from here on wakes the wait
            jobs_needed = self.current_concurrency - self.current_occupancy()
            if jobs_needed <= 0:
                log.debug("JobScaler.get_jobs | Queue is full. Retrying soon.")
                await _wait(wake.slot, 1.0)  # SDK: asyncio.sleep(1)
                continue

            try:
                log.debug("JobScaler.get_jobs | Starting job acquisition.")
                acquired_jobs = await asyncio.wait_for(
                    self.jobs_fetcher(session, jobs_needed),
                    timeout=self.jobs_fetcher_timeout,
                )
                if not acquired_jobs:
                    log.debug("JobScaler.get_jobs | No jobs acquired.")
                    continue

                for job in acquired_jobs:
                    await self.jobs_queue.put(job)
                    self.job_progress.add(job)
                    wake.work.set()  # run_jobs starts it now, not at its next 0.1 s poll
                    log.debug("Job Queued", job["id"])

                log.info(f"Jobs in queue: {self.jobs_queue.qsize()}")

            except m.TooManyRequests:
                log.debug("JobScaler.get_jobs | Too many requests. Debounce for 5 seconds.")
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                log.debug("JobScaler.get_jobs | Request was cancelled.")
                raise
            except TimeoutError:
                log.debug("JobScaler.get_jobs | Job acquisition timed out. Retrying.")
            except TypeError as error:
                log.debug(f"JobScaler.get_jobs | Unexpected error: {error}.")
            except Exception as error:
                log.error(
                    f"Failed to get job. | Error Type: {type(error).__name__} | Error Message: {error!s}"
                )
            finally:
                await asyncio.sleep(0)

    async def run_jobs(self: Any, session: Any) -> None:
        wake = _wakeups(self)
        tasks: set[asyncio.Task[Any]] = set()
        last_task_count = 0
        while self.is_alive() or not self.jobs_queue.empty():
            wake.work.clear()  # before looking: a job queued or finished from here on wakes the wait
            while len(tasks) < self.current_concurrency and not self.jobs_queue.empty():
                job = await self.jobs_queue.get()  # not empty: returns without yielding
                task = asyncio.create_task(self.handle_job(session, job))
                task.add_done_callback(wake.job_done)
                tasks.add(task)
                self.jobs_tasks[job["id"]] = task

            if tasks:
                current_task_count = len(tasks)
                if current_task_count != last_task_count:
                    log.info(f"Jobs in progress: {current_task_count}")
                    last_task_count = current_task_count
                if not any(t.done() for t in tasks):
                    await _wait(wake.work, 0.1)  # SDK: asyncio.wait(..., timeout=0.1)
                tasks.difference_update({t for t in tasks if t.done()})
            else:
                await _wait(wake.work, 0.1)  # SDK: asyncio.sleep(0.1)

        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                log.error(f"JobScaler.run_jobs | Task failed during shutdown drain: {result}")

    def kill_worker(self: Any) -> None:
        original_kill(self)
        wake = self.__dict__.get("_tide_wakeups")
        if wake is not None:  # also from a signal handler: wake the loop through its self-pipe
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits
                wake.loop.call_soon_threadsafe(wake.wake_all)

    scaler.get_jobs = get_jobs
    scaler.run_jobs = run_jobs
    scaler.kill_worker = kill_worker
    setattr(scaler, _MARK, True)


class _PatchingLoader:
    """Runs the real loader, then patches the module it made."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        try:
            patch(module)
        except Exception as exc:  # never break the worker: it runs as the SDK wrote it
            _note(f"not applied ({type(exc).__name__}: {exc}); the SDK's worker loop runs unchanged")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Finder:
    """A meta-path finder for ``TARGET`` only; it steps aside once it has fired."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != TARGET:
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Patch at the import of ``rp_scale`` (or now, if it is already imported)."""
    if not enabled():
        return
    loaded = sys.modules.get(TARGET)
    if loaded is not None:
        patch(loaded)
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
