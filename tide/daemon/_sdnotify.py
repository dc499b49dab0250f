"""sd_notify without a dependency: READY, STOPPING, WATCHDOG and STATUS for
Type=notify units.  A no-op when not run by systemd (NOTIFY_SOCKET unset)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

__all__ = ["notify", "serve_until_signalled", "watchdog_interval"]


def notify(state: str) -> bool:
    """Send one notification such as "READY=1"; returns whether it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # Never block the event loop: a full notify queue drops this message
        # (systemd reads it continuously; a stalled reader must not stall us).
        sock.setblocking(False)
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:  # includes BlockingIOError
            return False
    return True


def watchdog_interval() -> float | None:
    """Half of WatchdogSec in seconds when systemd expects pings, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


async def serve_until_signalled(status: str) -> None:
    """The daemon's life between start and stop: send READY (with ``status``),
    ping the watchdog while waiting for SIGTERM or SIGINT, then send STOPPING."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    notify(f"READY=1\nSTATUS={status}")
    interval = watchdog_interval()
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval or 3600):
                await stopping.wait()
        if interval:
            notify("WATCHDOG=1")
    notify("STOPPING=1")
