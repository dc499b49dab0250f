"""``tide mig plan|apply HOST GPU LAYOUT``, ``tide mig release HOST GPU``: an operator's MIG
layout for one card.

``plan`` asks the coordinator where each slice would go (explicit placements from mig/'s
planner, checked against the instances the host reports) and what would be destroyed and
created; it changes nothing.  ``apply`` stores the layout; the host's noded then re-cuts the
card, destroying only idle slices.  Slices a worker uses are never planned away (the
coordinator answers 409 and names them).  ``release`` forgets the card's stored layout: noded
leaves its instances as they are and the scheduler cuts it again only when demand asks.
"""

from __future__ import annotations

import argparse
from typing import Any

from tide.cli._client import route_missing
from tide.cli._cluster import fetch
from tide.cli._context import Context, seg
from tide.cli._errors import CliError, UsageError
from tide.cli._format import field
from tide.cli._gpus import render_bar
from tide.cli._parsing import Subparsers, add_command

__all__ = ["parse_layout", "register"]

_EXAMPLE = "3g.40gb,2g.20gb,1g.10gb"


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    mig = add_command(
        sub,
        common,
        "mig",
        "plan or apply a MIG layout on one card",
        "\n".join(
            [
                f"tide mig plan gpu-07 0 {_EXAMPLE}",
                f"tide mig apply gpu-07 0 {_EXAMPLE}",
                "tide mig apply gpu-07 1 none",
            ]
        ),
        subcommands=True,
    )
    msub = mig.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, summary in (
        ("plan", "where each slice would go and what would change; changes nothing"),
        ("apply", "store the layout; the host re-cuts the card, destroying idle slices only"),
    ):
        p = add_command(msub, common, action, summary, f"tide mig {action} gpu-07 0 {_EXAMPLE}", _mig)
        p.add_argument("host", metavar="HOST", help="node id or hostname")
        p.add_argument("gpu", metavar="GPU", help="the card's index on the host, or its GPU uuid")
        p.add_argument(
            "layout",
            metavar="LAYOUT",
            nargs="+",
            help="MIG profiles, comma- or space-separated ('none': no instances, MIG stays on)",
        )
    p = add_command(
        msub,
        common,
        "release",
        "forget a card's stored layout (its slices stay)",
        "tide mig release gpu-07 0",
        _release,
    )
    p.add_argument("host", metavar="HOST", help="node id or hostname")
    p.add_argument("gpu", metavar="GPU", help="the card's index on the host, or its GPU uuid")


def parse_layout(words: list[str]) -> list[str]:
    """``["3g.40gb,2g.20gb", "1g.10gb"]`` -> the profiles; ``["none"]`` -> ``[]``."""
    profiles = [p.strip() for w in words for p in w.split(",") if p.strip()]
    if profiles == ["none"]:
        return []
    if not profiles or "none" in profiles:
        raise UsageError(f"LAYOUT: MIG profiles such as {_EXAMPLE}, or 'none' alone")
    return profiles


def _node(nodes: list[dict[str, Any]], host: str) -> dict[str, Any]:
    for n in nodes:
        if host in (n.get("id"), (n.get("inventory") or {}).get("hostname")):
            return n
    known = ", ".join(str(n.get("id")) for n in nodes) or "none"
    raise CliError(f"no node {host!r}", hint=f"known nodes: {known} ('tide nodes' lists them)", status=404)


def _current(node: dict[str, Any], gpu: str) -> list[dict[str, Any]]:
    for g in (node.get("inventory") or {}).get("gpus") or []:
        if isinstance(g, dict) and gpu in (str(g.get("index")), g.get("uuid")):
            return [i for i in field(g, "migInstances") or [] if isinstance(i, dict)]
    return []


def _mig(args: argparse.Namespace, ctx: Context) -> int:
    layout = parse_layout(args.layout)
    node = _node(fetch(ctx, "nodes", "/admin/v1/nodes"), args.host)
    path = f"/admin/v1/nodes/{seg(str(node['id']))}/gpus/{seg(args.gpu)}/mig"
    try:
        res = ctx.client.post(path, {"layout": layout, "dryRun": args.action == "plan"})
    except CliError as err:
        if route_missing(err):
            raise CliError("this coordinator does not support MIG layouts yet", status=404) from None
        raise
    before = _current(node, args.gpu)

    def human() -> None:
        grid = int(res.get("grid") or 8)
        ctx.say(f"{res.get('nodeId')} GPU {res.get('index')} ({res.get('typeId')}, {res.get('gpu')})")
        ctx.say(f"  now    {render_bar(before, grid)}")
        ctx.say(f"  wanted {render_bar(res.get('layout') or [], grid)}")
        for verb in ("destroy", "create"):
            slots = res.get(verb) or []
            ctx.say(f"  {verb}: " + (", ".join(f"{s['profile']}@{s['start']}" for s in slots) or "nothing"))
        if args.action == "plan":
            ctx.say(f"plan only: nothing changed ('tide mig apply {args.host} {args.gpu} ...' applies it)")
        else:
            ctx.say(f"stored: {res.get('nodeId')} re-cuts the card now ('tide gpus' shows it)")

    return ctx.emit(res, human)


def _release(args: argparse.Namespace, ctx: Context) -> int:
    node = _node(fetch(ctx, "nodes", "/admin/v1/nodes"), args.host)
    res = ctx.client.delete(f"/admin/v1/nodes/{seg(str(node['id']))}/gpus/{seg(args.gpu)}/mig")
    return ctx.emit(res, lambda: ctx.say(f"{res.get('nodeId')} GPU {res.get('gpu')}: layout forgotten"))
