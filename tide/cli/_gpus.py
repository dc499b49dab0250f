"""``tide gpus``: one line per card with a bar of its memory slices showing which
MIG instance holds which slice, e.g. ``[3g.40gb*          ][2g.20gb  ][1g  ][....]``.

The bar is drawn from ``tide nodes`` data alone: each MIG instance carries its
placement (start, size) on the card's memory-slice grid; the grid's width comes
from the card's MIG catalog (8 slices on A100/H100/H200/B200, 12 on RTX PRO 6000).
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from tide.cli._client import route_missing
from tide.cli._cluster import fetch, node_state
from tide.cli._context import Context
from tide.cli._errors import CliError
from tide.cli._format import field, table
from tide.cli._parsing import Subparsers, add_command

__all__ = ["register", "render_bar"]

_BAR_CHARS = 40  # an 8-slice card gets 5 characters a slice


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    add_command(
        sub,
        common,
        "gpus",
        "every card and which MIG instance holds which memory slice",
        "tide gpus",
        _gpus,
    )


@functools.lru_cache(maxsize=32)
def _catalog_grid(type_id: str) -> int:
    try:
        from mig import load_catalog  # lazy: only this command needs the catalogs

        return load_catalog(type_id).grid
    except Exception:  # an unknown or non-MIG card still gets a picture
        return 8


def render_bar(instances: list[dict[str, Any]], grid: int, owner: str = "") -> str:
    """The slice bar for one card.  ``instances``: MIG instances (start, size, profile,
    busy); none on a MIG card means all free.  ``owner`` draws a whole (non-MIG) card."""
    width = max(3, _BAR_CHARS // grid)
    if owner:
        return _segment([owner + "*", "whole GPU*"], grid * width)
    out, pos = [], 0
    for inst in sorted(instances, key=lambda i: int(i.get("start", 0))):
        start, size = int(inst.get("start", 0)), max(1, int(inst.get("size", 1)))
        if start > pos:
            out.append(_segment([], (start - pos) * width))
        profile, star = str(inst.get("profile", "?")), "*" if inst.get("busy") else ""
        out.append(_segment([profile + star, profile.split(".")[0] + star, star], size * width))
        pos = max(pos, start + size)
    if pos < grid:
        out.append(_segment([], (grid - pos) * width))
    return "".join(out)


def _segment(labels: list[str], chars: int) -> str:
    """``[label   ]`` exactly ``chars`` wide, with the longest label that fits; free is dots."""
    inner = chars - 2
    if not labels:
        return "[" + "." * inner + "]"
    label = next((x for x in labels if len(x) <= inner), "")
    return "[" + label.ljust(inner) + "]"


def _owners(node: dict[str, Any], workers: list[Any]) -> dict[str, str]:
    """Device uuid -> worker id: from the worker list, and from node reports that name devices."""
    owners: dict[str, str] = {}
    for w in [*(node.get("workers") or []), *workers]:
        if isinstance(w, dict):
            for dev in field(w, "devices") or []:
                owners[str(dev)] = str(field(w, "workerId", "?"))
    return owners


def _card(node: dict[str, Any], gpu: dict[str, Any], owners: dict[str, str]) -> dict[str, Any]:
    """One card as --json shows it: identity, slice grid, instances with their workers, the bar."""
    type_id = str(field(gpu, "typeId", "?"))
    # an instance a worker uses counts as busy even if the node's inventory lags
    instances = [
        {
            **i,
            "busy": bool(i.get("busy")) or i.get("uuid") in owners,
            "workerId": owners.get(i.get("uuid", ""), ""),
        }
        for i in field(gpu, "migInstances") or []
        if isinstance(i, dict)
    ]
    mig = bool(field(gpu, "migEnabled"))
    grid = max([_catalog_grid(type_id), *(int(i.get("start", 0)) + int(i.get("size", 1)) for i in instances)])
    owner = "" if mig else owners.get(str(gpu.get("uuid", "")), "")
    inv = node.get("inventory") or {}
    return {
        "nodeId": node.get("id", ""),
        "hostname": inv.get("hostname", ""),
        "index": gpu.get("index"),
        "uuid": gpu.get("uuid", ""),
        "typeId": type_id,
        "memoryMb": field(gpu, "memoryMb", 0),
        "migEnabled": mig,
        "grid": grid if mig else 0,
        "instances": instances,
        "workerId": owner,
        # why the host does not (yet) hold the layout it was told to cut (busy slice in the way ...)
        "migError": str((field(inv, "migErrors") or {}).get(str(gpu.get("uuid", "")), "")),
        "bar": render_bar(instances, grid) if mig else render_bar([], 8, owner=owner),
    }


def _row(card: dict[str, Any], host: str) -> list[object]:
    if card["migEnabled"]:
        insts = card["instances"]
        users = [f"{i['workerId']}:{i.get('profile', '?')}" for i in insts if i["workerId"]]
        note = f"{sum(1 for i in insts if i['busy'])}/{len(insts)} in use" + (
            f"  {', '.join(users)}" if users else ""
        )
    else:
        note = "whole GPU, " + (card["workerId"] or "free")
    if card["migError"]:
        note += f"  ! re-cut waits: {card['migError']}"
    memory = card["memoryMb"]
    return [
        host,
        card["index"],
        card["typeId"],
        f"{memory / 1024:.0f}G" if memory else "-",
        card["bar"],
        note,
    ]


def _gpus(args: argparse.Namespace, ctx: Context) -> int:
    nodes = fetch(ctx, "nodes", "/admin/v1/nodes")
    try:
        workers = ctx.client.get("/admin/v1/workers")
    except CliError as err:
        if not route_missing(err):
            raise
        workers = []  # an older coordinator: draw from the inventory's busy flags alone
    cards, rows = [], []
    for node in nodes:
        host = str((node.get("inventory") or {}).get("hostname") or node.get("id", "?"))
        if node_state(node) != "ready":
            host += f" ({node_state(node)})"
        owners = _owners(node, workers)
        for gpu in (node.get("inventory") or {}).get("gpus") or []:
            if isinstance(gpu, dict):
                cards.append(_card(node, gpu, owners))
                rows.append(_row(cards[-1], host))

    def human() -> None:
        ctx.say(table(["HOST", "GPU", "TYPE", "MEM", "SLICES", "USE"], rows, empty="no GPUs registered"))
        if rows:
            ctx.say("* in use   . free slice")

    return ctx.emit(cards, human)
