"""``tide mig plan|apply HOST GPU LAYOUT``, ``tide mig release HOST GPU``: an operator's MIG
layout for one card.

``plan`` asks the coordinator where each slice would go (explicit placements from mig/'s
planner, checked against the instances the host reports) and what would be destroyed and
created; it changes nothing.  ``apply`` stores the layout; the host's noded then re-cuts the
card, destroying only idle slices.  Slices a worker uses are never planned away (the
coordinator answers 409 and names them).  ``release`` forgets the card's stored layout: noded
leaves its instances as they are and the scheduler cuts it again only when demand asks.
``forecast`` shows, per region, the demand the coordinator expects in the coming hour (learnt
per hour of week, or of day until two weeks are seen) and the idle cards it would re-cut ahead
of time for it.
"""

from __future__ import annotations

import argparse
from typing import Any

from tide.cli._client import route_missing
from tide.cli._cluster import fetch, parse_since
from tide.cli._context import Context, seg
from tide.cli._errors import CliError, UsageError
from tide.cli._format import ago, field, table
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
                "tide mig forecast --region EU",
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
    p = add_command(
        msub,
        common,
        "forecast",
        "the demand expected next hour per region, and the idle cards re-cut ahead of time for it",
        "tide mig forecast --region EU --hours 6",
        _forecast,
    )
    p.add_argument("--region", help="one region only")
    p.add_argument("--at", metavar="TIME", help="plan as of this ISO time (UTC if no zone) instead of now")
    p.add_argument("--hours", type=int, default=12, help="how many coming hours to list (default 12)")


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


def _forecast(args: argparse.Namespace, ctx: Context) -> int:
    query: dict[str, object] = {"hours": max(1, min(168, args.hours))}
    if args.region:
        query["region"] = args.region
    if args.at:
        query["at"] = _parse_at(args.at, ctx.now)
    try:
        res = ctx.client.get("/admin/v1/mig/forecast", **query)
    except CliError as err:
        if route_missing(err):
            raise CliError("this coordinator does not forecast MIG demand yet", status=404) from None
        raise
    return ctx.emit(res, lambda: _render_forecast(ctx, res))


def _parse_at(text: str, now: float) -> float:
    if "T" in text and not text.endswith("Z") and "+" not in text:
        text += "Z"  # an ISO time without a zone means UTC, as the hour buckets do
    return parse_since(text, now)


def _render_forecast(ctx: Context, res: dict[str, Any]) -> None:
    regions = res.get("regions") or []
    if not regions:
        ctx.say("no live nodes")
    for r in regions:
        _render_region(ctx, r, float(res.get("at") or ctx.now))


def _render_region(ctx: Context, r: dict[str, Any], at: float) -> None:
    starts = int(r.get("hour", 0)) * 3600
    basis = str(r.get("basis"))
    seen = f" ({r.get('occurrences')} seen)" if basis != "none" else ": no forecast yet (needs 2 days)"
    ctx.say(f"{r.get('region') or '(no region)'}: {r.get('label')} ({ago(starts, at)}), from {basis}{seen}")
    plan = r.get("plan") or {}
    forecast = r.get("forecast") or {}
    keys = sorted(set(forecast) | set(plan.get("capacity") or {}))
    rows = [
        [k, f"{forecast.get(k, 0):.1f}", *(str((plan.get(c) or {}).get(k, "-")) for c in _COLUMNS)]
        for k in keys
        if ":" in k
    ]
    if rows:
        ctx.say(
            table(
                ["  SLICE", "FORECAST", "WANTED", "HELD", "MISSING", "SURPLUS"],
                [["  " + x[0], *x[1:]] for x in rows],
            )
        )
    whole = {k: v for k, v in forecast.items() if ":" not in k}
    cards = field(r, "wholeGpus") or {}
    for k in sorted(set(whole) | set(cards)):
        ctx.say(f"  whole {k}: {whole.get(k, 0):.1f} forecast, {cards.get(k, 0)} non-MIG card(s)")
    if plan:
        _render_plan(ctx, plan)
    upcoming = r.get("upcoming") or []
    if len(upcoming) > 1:
        hours = ", ".join(f"{u['label'][4:9]} {u['slices']:g}+{field(u, 'wholeGpus'):g}" for u in upcoming)
        ctx.say(f"  coming hours (slices+whole): {hours}")


_COLUMNS = ("wanted", "capacity", "deficit", "surplus")


def _render_plan(ctx: Context, plan: dict[str, Any]) -> None:
    missing, threshold = field(plan, "deficitCards", 0.0), field(plan, "thresholdCards", 0.0)
    ctx.say(f"  missing {missing:g} card(s) of slices; re-cuts start at {threshold:g}")
    for t in plan.get("targets") or []:
        made = ", ".join(f"{s['profile']}@{s['start']}" for s in t.get("create") or []) or "nothing"
        gone = ", ".join(f"{s['profile']}@{s['start']}" for s in t.get("destroy") or []) or "nothing"
        ctx.say(f"  re-cut {t.get('nodeId')} {t.get('gpuUuid')}: {','.join(t.get('profiles') or [])}")
        ctx.say(f"    destroy: {gone}; create: {made}")
    for gpu, why in sorted((plan.get("skipped") or {}).items()):
        ctx.say(f"  left alone {gpu}: {why}")
    if plan.get("reason"):
        ctx.say(f"  {plan['reason']}")
