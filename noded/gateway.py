"""tide-noded's worker gateway as its own process (noded/_gateway.py says what it does).

It outlives noded on purpose, like the workers it serves: a noded restart (or crash) must not cut
workers off from the coordinators.  noded starts it once (``ensure_gateway``), adopts a running one
with the same replica list on its next start, and replaces one whose list differs::

    python -m noded.gateway --listen 127.0.0.1:8422 --upstream http://c1:8420 --upstream http://c2:8420
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tide.api.errors import Unavailable

__all__ = ["ensure_gateway", "gateway_health", "main"]

log = logging.getLogger("tide.noded.gateway")


def gateway_health(listen: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """What the gateway at ``listen`` reports, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://{listen}/_gateway/healthz", timeout=timeout) as resp:
            return dict(json.loads(resp.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def ensure_gateway(listen: str, upstreams: Sequence[str], state_dir: Path, timeout: float = 10.0) -> int:
    """A gateway on ``listen`` forwarding to ``upstreams``: adopted when one runs, else started
    (detached, in its own session).  Returns its pid.  Blocking: call it via a thread."""
    want = [u.rstrip("/") for u in upstreams]
    found = gateway_health(listen)
    if found is not None and found.get("upstreams") == want:
        log.info("adopted the worker gateway on %s (pid %s)", listen, found.get("pid"))
        return int(found["pid"])
    if found is not None:  # another replica list: only ours is replaced, by the pid we recorded
        _stop_recorded(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "noded.gateway", "--listen", listen]
    for u in want:
        argv += ["--upstream", u]
    with open(state_dir / "gateway.log", "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    (state_dir / "gateway.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the worker gateway exited with {proc.returncode}; see {state_dir}/gateway.log"
            )
        health = gateway_health(listen, timeout=0.5)
        if health is not None and health.get("pid") == proc.pid:
            log.info("started the worker gateway on %s (pid %d)", listen, proc.pid)
            return proc.pid
        time.sleep(0.05)
    raise Unavailable(f"the worker gateway did not answer on {listen} within {timeout} s")


def _stop_recorded(state_dir: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int((state_dir / "gateway.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)  # raises once it is gone
            time.sleep(0.05)


async def _serve(listen: str, upstreams: list[str]) -> None:
    from aiohttp import web

    from noded._gateway import Gateway, GatewaySettings

    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(Gateway(GatewaySettings(upstreams=upstreams)).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port), reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker gateway on %s -> %s", listen, ", ".join(upstreams))
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tide-noded-gateway", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:8422", help="host:port (default 127.0.0.1:8422)")
    p.add_argument("--upstream", action="append", required=True, help="a coordinator URL (repeat)")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args.listen, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
