"""The per-worker shim of the process runtime: ``python -I _shim.py WORKER_DIR READY_FD``.

The runtime starts this file in a new session; it forks once more so that it is
nobody's child (init or a subreaper reaps it), which is what lets workers
outlive noded.  It then:

1. reads ``launch.json`` (argv, env, cwd, log path, cgroup dir), all decided by
   the runtime, so this file stays dumb and stdlib-only;
2. starts the worker in its own process group with stdout+stderr to the log;
3. writes ``state.json`` (its own pid and start ticks, the worker's pid and
   start ticks, the start time) atomically, then reports ``ok`` or an error
   line on READY_FD and closes it;
4. forwards SIGTERM/SIGINT/SIGHUP to the worker's process group;
5. on the worker's exit kills what is left of its group (a worker's exit ends
   its children, as in a container) and records ``exit_code`` (128+N for
   signal N) and ``exited_at`` in ``state.json`` atomically.

Stdlib only: it runs under ``python -I`` and must not depend on noded's venv.

The prewarm pool (``_zygote.py``) runs this same ``run`` in a fork of its
zygote, with ``spawn`` forking the worker instead of executing it: the
supervision above, ``state.json`` and the ready line are the same either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of ``pid``; None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def proc_start_ticks(pid: int) -> int:
    state = proc_state(pid)
    return state[1] if state else 0


def write_json_atomic(path: str, value: dict[str, Any]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _join_cgroup(cgroup_dir: str) -> None:
    # Runs in the child between fork and exec (the shim is single-threaded).
    with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
        f.write("0")


class Spawned(Protocol):
    """What ``run`` needs of a started worker: a Popen, or the prewarm pool's forked child."""

    @property
    def pid(self) -> int: ...


def _spawn(launch: dict[str, Any]) -> subprocess.Popen[bytes]:
    cgroup_dir = launch.get("cgroup_dir") or ""
    with open(launch["log_path"], "ab") as log:
        return subprocess.Popen(
            launch["argv"],
            cwd=launch["cwd"],
            env=launch["env"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=(lambda: _join_cgroup(cgroup_dir)) if cgroup_dir else None,
        )


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _report(ready_fd: int, line: str) -> None:
    os.write(ready_fd, line.encode() + b"\n")
    os.close(ready_fd)


def run(worker_dir: str, ready_fd: int, spawn: Callable[[dict[str, Any]], Spawned] = _spawn) -> int:
    with open(os.path.join(worker_dir, "launch.json")) as f:
        launch = json.load(f)
    state_path = os.path.join(worker_dir, "state.json")
    shim = {"shim_pid": os.getpid(), "shim_start": proc_start_ticks(os.getpid())}
    try:
        proc = spawn(launch)  # keep the object: a Popen reaped by its __del__ would steal our waitpid
    except OSError as e:
        with open(launch["log_path"], "a") as log:
            log.write(f"tide shim: cannot start {launch['argv'][0]!r}: {e}\n")
        now = time.time()
        write_json_atomic(state_path, {**shim, "started_at": now, "exit_code": 127, "exited_at": now})
        _report(ready_fd, f"error: cannot start {launch['argv'][0]!r}: {e.strerror or e}")
        return 0

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    state = {**shim, "pid": proc.pid, "pid_start": proc_start_ticks(proc.pid), "started_at": time.time()}
    write_json_atomic(state_path, state)
    _report(ready_fd, "ok")
    _, status = os.waitpid(proc.pid, 0)  # retried on EINTR after each forwarded signal
    exited_at = time.time()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    write_json_atomic(state_path, {**state, "exit_code": _exit_code(status), "exited_at": exited_at})
    return 0


def main(argv: list[str]) -> int:
    worker_dir, ready_fd = argv[1], int(argv[2])
    # Detach from the runtime: the intermediate exits at once (the runtime reaps
    # it), and the grandchild is reparented to init or the nearest subreaper.
    if os.fork() != 0:
        os._exit(0)
    return run(worker_dir, ready_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
