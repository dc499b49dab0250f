"""Run tide-coordinator and tide-noded as real processes for the ops tests.

Each daemon gets its own temp dir and config file, a free loopback port and,
optionally, a NOTIFY_SOCKET the test binds (a unix datagram socket, as systemd
gives a Type=notify service).  Processes are stopped by PID: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.fixtures.etcd import free_port

__all__ = ["REPO_ROOT", "Daemon", "NotifySocket", "free_port", "module_cmd"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def module_cmd(module: str, *args: str) -> list[str]:
    """``python -m <module> args`` with the test's interpreter (the entry points need no install)."""
    return [sys.executable, "-m", module, *args]


class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket.

    A thread reads it all the time, as PID 1 does: the daemons' sends block once the
    socket's queue is full (a few datagrams), which would stall their event loops."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.seen: list[str] = []  # every "KEY=value" line received, in order
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"notify {path.name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.seen.extend(data.decode().splitlines())
                self._changed.notify_all()

    def wait_for(self, line: str, timeout: float = 30.0) -> bool:
        """Whether a datagram carrying ``line`` (e.g. "READY=1") arrives within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: line in self.seen, timeout)

    def close(self) -> None:
        self._closing.set()
        self._reader.join(timeout=5)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Daemon:
    """One daemon process with its log in a file; ``stop()`` by PID."""

    def __init__(self, cmd: list[str], *, log: Path, env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.log = log
        self.env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; the exit code, or None if it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def output(self) -> str:
        return self.log.read_text(errors="replace")
