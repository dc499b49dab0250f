"""The process runtime's side of the prewarm pool: it starts the zygote and hands it workers.

``ProcessRuntime(prewarm=True)`` owns one ``PrewarmPool``: a zygote process
(``_zygote.py``, where the design is described) started at once with a minimal
environment, talking over a socketpair nobody else holds.  Its only message to
us is ``ready {report}`` once its imports are done; until then, and whenever it
is gone, workers start by exec as before.  A request is one datagram: the
worker's directory, with the write end of a pipe on which the shim reports its
ready line, exactly as the exec'd shim does.  Files in the state dir:
``.zygote.log`` (its output) and ``.zygote-home/`` (its HOME and cwd), neither
a valid worker id; a zygote for ``-O``/``-OO`` launches adds the flag to both names.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, final

from noded.runtime._common import BASE_ENV
from noded.runtime.process._pyargv import Fork, plan_python_launch

__all__ = ["DEFAULT_PREWARM_MODULES", "PrewarmPool", "fork_eligible"]

log = logging.getLogger(__name__)

_ZYGOTE = str(Path(__file__).with_name("_zygote.py"))
DEFAULT_PREWARM_MODULES = ("runpod",)
# Threads a preloaded module starts at import and that are known to survive a fork harmlessly:
# torch starts one idle native thread, and its DataLoader forks after import by design.
_IDLE_THREADS_AT_IMPORT = {"torch": 1}


def fork_eligible(argv: Sequence[str], python: str) -> bool:
    """Whether a launch is the pool's kind: ``<this python> [-uBsEO] SCRIPT [ARGS]``.  Pure.

    Anything else (another interpreter, ``-c``, a shell) is exec'd
    (``_pyargv.plan_python_launch``).  The zygote may still exec an eligible
    launch (``_zygote.fork_refusal``)."""
    return isinstance(plan_python_launch(argv, python), Fork)


@final
class PrewarmPool:
    """One zygote.  ``spawn`` is blocking and safe to call from several threads at once."""

    def __init__(
        self, python: str, modules: Sequence[str], root: Path, *, start_flags: Sequence[str] = ()
    ) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._gone = False
        self.report: dict[str, Any] = {}
        self._started = time.monotonic()
        self._expected_threads = 1 + sum(_IDLE_THREADS_AT_IMPORT.get(m.partition(".")[0], 0) for m in modules)
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # -O/-OO are fixed at interpreter start: each level gets its own zygote (and log).
        suffix = "".join(start_flags)
        home = root / f".zygote-home{suffix}"
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            home.mkdir(exist_ok=True)
            with open(root / f".zygote{suffix}.log", "ab") as out:
                self._proc = subprocess.Popen(
                    [python, "-u", *start_flags, _ZYGOTE, str(theirs.fileno()), *modules],
                    pass_fds=(theirs.fileno(),),
                    env={**BASE_ENV, "HOME": str(home)},  # nothing of noded's own environment
                    cwd=home,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,  # a Ctrl-C meant for noded must not hit it mid-fork
                )
        except OSError as exc:
            log.warning("prewarm pool: cannot start the zygote (%s); workers start by exec", exc)
            self._gone = True
        finally:
            theirs.close()

    def _poll(self) -> bool:
        """True once the zygote has said ready and still runs.  Never blocks."""
        with self._lock:
            if not self._ready and not self._gone:
                self._read_ready()
            if self._ready and self._proc is not None and self._proc.poll() is not None:
                code = self._proc.returncode
                log.warning("prewarm pool: the zygote exited (%s); workers start by exec", code)
                self._ready, self._gone = False, True
            return self._ready

    def _read_ready(self) -> None:
        try:
            msg = self._ours.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            msg = b""
        if not msg.startswith(b"ready "):  # b"" is its exit: it failed to start (see .zygote.log)
            log.warning("prewarm pool: the zygote did not start; workers start by exec")
            self._gone = True
            return
        self.report = json.loads(msg[len(b"ready ") :])
        self._ready = True
        took = time.monotonic() - self._started
        log.info("prewarm pool ready after %.1fs: %s", took, self.report)
        if self.report.get("failed"):
            log.warning("prewarm pool: not preloaded: %s", self.report["failed"])
        if self.report.get("threads", 1) > self._expected_threads:  # a fork is only as safe as its libraries
            log.warning("prewarm pool: the zygote runs %s threads after its imports", self.report["threads"])

    def wait_ready(self, timeout: float) -> bool:
        """Block until the zygote serves (True) or failed or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while not self._poll():
            left = deadline - time.monotonic()
            if self._gone or left <= 0:
                return False
            select.select([self._ours], [], [], min(left, 1.0))  # wakes on its message or its exit
        return True

    def spawn(self, worker_dir: str) -> str | None:
        """Have the zygote start this worker's shim; its ready line ("ok", "error: ...", or ""
        when it said nothing), or None when the pool cannot take it (not ready, gone)."""
        if not self._poll():
            return None
        r, w = os.pipe()
        try:
            socket.send_fds(self._ours, [os.fsencode(worker_dir)], [w])
        except OSError as exc:
            os.close(r)
            log.warning("prewarm pool: the zygote is unreachable (%s); workers start by exec", exc)
            with self._lock:
                self._ready, self._gone = False, True
            return None
        finally:
            os.close(w)
        with os.fdopen(r, "rb") as ready:
            return ready.read().decode(errors="replace").strip()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the zygote (closing our end is its signal to exit); the workers it forked run on."""
        self._ours.close()
        if self._proc is None:
            return
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
