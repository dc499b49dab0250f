"""Cluster commands: ``tide nodes``, ``node drain|undrain``, ``workers``, ``logs``,
``usage``, ``status``.  Coordinators older than these routes answer 404; the
commands then say so instead of failing obscurely."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from datetime import datetime
from typing import Any

from tide.cli._client import route_missing
from tide.cli._context import Context, seg
from tide.cli._errors import CliError, UsageError
from tide.cli._format import ago, duration, field, kv_block, table
from tide.cli._parsing import Subparsers, add_command

__all__ = ["fetch", "node_state", "parse_since", "register"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def fetch(ctx: Context, what: str, path: str, **query: object) -> Any:
    """GET ``path``; a missing route becomes "this coordinator does not support <what> yet"."""
    try:
        return ctx.client.get(path, **query)
    except CliError as err:
        if route_missing(err):
            raise CliError(
                f"this coordinator does not support {what} yet",
                hint="upgrade the coordinator to a version with this admin route",
                status=404,
            ) from None
        raise


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    _register_nodes(sub, common)
    _register_workers_and_usage(sub, common)


def _register_nodes(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    add_command(
        sub, common, "nodes", "GPU hosts: inventory, heartbeat, draining or lost", "tide nodes", _nodes
    )
    node = add_command(
        sub,
        common,
        "node",
        "drain a host (no new workers), put it back, or forget it to re-image it",
        "tide node drain gpu-07\ntide node undrain gpu-07\ntide node forget gpu-07",
        subcommands=True,
    )
    nsub = node.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, summary in (
        ("drain", "stop placing workers on a host; running ones finish"),
        ("undrain", "let the placer use a drained host again"),
    ):
        p = add_command(nsub, common, action, summary, f"tide node {action} gpu-07", _node_action)
        p.add_argument("host", metavar="HOST", help="node id or hostname")
    p = add_command(
        nsub,
        common,
        "forget",
        "forget a host so it can be re-imaged: its record, node token and MIG layouts go. "
        "Drain it first and wait until 'tide workers' shows none there (a lost host can be "
        "forgotten at once). The re-imaged host's noded then registers as a new host with its "
        "join key (scope node); without forget, a join key cannot register a known host name",
        "tide node drain gpu-07 && tide workers   # wait until none run on gpu-07\n"
        "tide node forget gpu-07                  # then re-image; noded joins as new",
        _node_forget,
    )
    p.add_argument("host", metavar="HOST", help="node id or hostname")


def _register_workers_and_usage(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    workers = add_command(
        sub,
        common,
        "workers",
        "workers, where they run and their state; suspended ones (frozen while their endpoint is "
        "scaled down, resumed on its next job) with the host RAM they hold",
        "tide workers --endpoint sd",
        _workers,
    )
    workers.add_argument("--endpoint", metavar="EP", help="only this endpoint's workers")
    logs = add_command(
        sub, common, "logs", "a worker's recent output", "tide logs w-3f9a1c --tail 200", _logs
    )
    logs.add_argument("worker", metavar="WORKER")
    logs.add_argument("--tail", type=int, default=100, metavar="N", help="last N lines (default 100)")
    usage = add_command(
        sub,
        common,
        "usage",
        "GPU-seconds and cost per endpoint and GPU type",
        "tide usage --since 24h\ntide usage --endpoint sd --since 2025-06-01T00:00",
        _usage,
    )
    usage.add_argument("--endpoint", metavar="EP", help="only this endpoint")
    usage.add_argument("--since", metavar="T", help="ISO time or relative: 30m, 1h, 7d (default: all)")
    add_command(
        sub, common, "status", "cluster summary: endpoints, queue, workers, free GPUs", "tide status", _status
    )


def parse_since(text: str, now: float) -> float:
    """Unix seconds for ``--since``: relative ("90s", "30m", "1h30m", "7d") or ISO-8601."""
    text = text.strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text)
    if parts and "".join(n + u for n, u in parts) == text:
        return now - sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise UsageError(
            f"--since {text!r}: use a relative time (30m, 1h, 7d) or an ISO time (2025-06-01T12:00)"
        ) from None


def node_state(node: dict[str, Any]) -> str:
    if node.get("lost"):
        return "lost"
    return "draining" if node.get("draining") else "ready"


def _gpu_summary(gpus: list[Any]) -> str:
    counts = Counter(str(field(g, "typeId", "?")) for g in gpus)
    return ", ".join(f"{n}x {t}" for t, n in counts.items()) or "none"


def _heartbeat(node: dict[str, Any], now: float) -> str:
    # the coordinator's own age figure is immune to clock skew between it and us
    age = node.get("heartbeatAgeS")
    if isinstance(age, int | float) and not isinstance(age, bool):
        return ago(now - age, now)
    return ago(field(node, "lastHeartbeat"), now)


def _nodes(args: argparse.Namespace, ctx: Context) -> int:
    nodes = fetch(ctx, "nodes", "/admin/v1/nodes")
    rows = []
    for n in nodes:
        inv = n.get("inventory") or {}
        rows.append(
            [
                n["id"],
                inv.get("hostname", ""),
                inv.get("region", "") or "-",
                inv.get("datacenter", "") or "-",
                _gpu_summary(inv.get("gpus") or []),
                len(n.get("workers") or []),
                _heartbeat(n, ctx.now),
                node_state(n),
            ]
        )
    headers = ["NODE", "HOSTNAME", "REGION", "DC", "GPUS", "WORKERS", "HEARTBEAT", "STATE"]
    empty = "no nodes have registered; start tide-noded on a GPU host (or `tide dev`)"
    return ctx.emit(nodes, lambda: ctx.say(table(headers, rows, empty=empty)))


def _node_action(args: argparse.Namespace, ctx: Context) -> int:
    nodes = fetch(ctx, f"node {args.action}", "/admin/v1/nodes")
    ids = [n["id"] for n in nodes if args.host in (n["id"], (n.get("inventory") or {}).get("hostname"))]
    if not ids:
        known = ", ".join(n["id"] for n in nodes) or "none"
        raise CliError(
            f"no node {args.host!r}", hint=f"known nodes: {known} ('tide nodes' lists them)", status=404
        )
    try:
        res = ctx.client.post(f"/admin/v1/nodes/{seg(ids[0])}/{args.action}")
    except CliError as err:
        if route_missing(err):
            raise CliError(f"this coordinator does not support node {args.action} yet", status=404) from None
        raise
    done = "draining: no new workers go there" if args.action == "drain" else "back in service"
    return ctx.emit(res, lambda: ctx.say(f"node {ids[0]} is {done}"))


def _node_forget(args: argparse.Namespace, ctx: Context) -> int:
    nodes = fetch(ctx, "node forget", "/admin/v1/nodes")
    ids = [n["id"] for n in nodes if args.host in (n["id"], (n.get("inventory") or {}).get("hostname"))]
    if not ids:
        known = ", ".join(n["id"] for n in nodes) or "none"
        raise CliError(
            f"no node {args.host!r}", hint=f"known nodes: {known} ('tide nodes' lists them)", status=404
        )
    res = ctx.client.delete(f"/admin/v1/nodes/{seg(ids[0])}")
    return ctx.emit(
        res,
        lambda: ctx.say(
            f"node {ids[0]} forgotten: its token no longer works; after re-imaging, its noded "
            "registers as a new host with its join key"
        ),
    )


def _workers(args: argparse.Namespace, ctx: Context) -> int:
    found = fetch(ctx, "workers", "/admin/v1/workers", endpoint=args.endpoint)
    rows = [
        [
            field(w, "workerId"),
            field(w, "endpointId"),
            field(w, "nodeId") or "-",
            field(w, "gpuType") or "-",
            ",".join(field(w, "devices") or []) or "-",
            w.get("state", "?"),
            w.get("restarts", 0),
            ago(field(w, "startedAt"), ctx.now),
            _ram(w),
        ]
        for w in found
    ]
    headers = ["WORKER", "ENDPOINT", "NODE", "GPU", "DEVICES", "STATE", "RESTARTS", "STARTED", "RAM"]
    return ctx.emit(found, lambda: ctx.say(table(headers, rows, empty="no workers running")))


def _ram(w: dict[str, Any]) -> str:
    """Host RAM a suspended worker holds (issue 16); "-" for the others."""
    ram = int(w.get("ramBytes") or 0)
    return f"{ram / (1 << 20):.0f} MiB" if w.get("state") == "suspended" else "-"


def _logs(args: argparse.Namespace, ctx: Context) -> int:
    res = fetch(ctx, "worker logs", f"/admin/v1/workers/{seg(args.worker)}/logs", tail=args.tail)

    def human() -> None:
        for line in res.get("lines") or []:
            ctx.say(str(line).rstrip("\n"))

    return ctx.emit(res, human)


def _usage(args: argparse.Namespace, ctx: Context) -> int:
    since = None if not args.since else int(parse_since(args.since, ctx.now))
    res = fetch(ctx, "usage", "/admin/v1/usage", endpoint=args.endpoint, since=since)
    cur = res.get("currency", "")

    def human() -> None:
        rows: list[list[object]] = [
            [
                field(r, "endpointId"),
                field(r, "gpuType"),
                duration(field(r, "gpuSeconds", 0)),
                _money(r.get("cost"), cur),
            ]
            for r in res.get("rows") or []
        ]
        if rows:
            total = field(res, "totalGpuSeconds", 0)
            rows.append(["TOTAL", "", duration(total), _money(field(res, "totalCost"), cur)])
        ctx.say(table(["ENDPOINT", "GPU", "GPU-TIME", "COST"], rows, empty="no usage in this period"))

    return ctx.emit(res, human)


def _money(value: object, currency: str) -> str:
    amount = float(value) if isinstance(value, int | float) else 0.0
    text = "<0.01" if 0 < amount < 0.005 else f"{amount:.2f}"
    return f"{text} {currency}".strip()


def _status(args: argparse.Namespace, ctx: Context) -> int:
    res = fetch(ctx, "cluster status", "/admin/v1/status")

    def human() -> None:
        workers = res.get("workers") or {}
        up = (
            ", ".join(f"{n} {s}" for s, n in workers.items() if n)
            if isinstance(workers, dict)
            else str(workers)
        )
        ctx.say(
            kv_block(
                [
                    ("endpoints", res.get("endpoints", 0)),
                    ("jobs", f"{res.get('queued', 0)} queued, {res.get('running', 0)} running"),
                    ("workers", up or "none"),
                ]
            )
        )
        rows = [
            [field(c, "gpuType"), c.get("region") or "-", c.get("free", 0), c.get("total", 0)]
            for c in res.get("capacity") or []
        ]
        ctx.say(
            "capacity\n"
            + table(
                ["  GPU", "REGION", "FREE", "TOTAL"],
                [["  " + str(r[0]), *r[1:]] for r in rows],
                empty="  no GPUs registered",
            )
        )

    return ctx.emit(res, human)
