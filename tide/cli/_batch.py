"""``tide batch submit|ls|get|results|cancel``: run-batch from a JSONL file."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from tide.cli._context import Context, seg
from tide.cli._errors import UsageError
from tide.cli._format import ago, kv_block, table
from tide.cli._parsing import Subparsers, add_command

__all__ = ["register"]


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    batch = add_command(
        sub,
        common,
        "batch",
        "run many inputs through an endpoint on spare capacity, by a deadline",
        "tide batch submit my-model inputs.jsonl --sla 8h --wait\n"
        "tide batch get my-model batch_0123abcd\n"
        "tide batch results my-model batch_0123abcd > out.jsonl",
        subcommands=True,
    )
    bsub = batch.add_subparsers(dest="action", metavar="ACTION", required=True)
    submit = add_command(
        bsub,
        common,
        "submit",
        'submit a JSONL file (one {"input": ...} a line); processing starts at once',
        "tide batch submit my-model inputs.jsonl --sla 8h\n"
        "tide batch submit my-model inputs.jsonl --name nightly --max-price 2.5 --wait",
        _submit,
    )
    submit.add_argument("endpoint", metavar="ENDPOINT")
    submit.add_argument("file", metavar="FILE", help="JSONL input; '-' reads stdin")
    submit.add_argument("--sla", help="deadline after submission: 8h, 90m, 2d (or hours as a number)")
    submit.add_argument("--name", help="a display name")
    submit.add_argument("--max-price", type=float, help="price cap, USD per GPU-hour")
    submit.add_argument("--wait", action="store_true", help="show progress until the batch finishes")
    add_command(
        bsub, common, "ls", "an endpoint's batches, newest first", "tide batch ls my-model", _ls
    ).add_argument("endpoint", metavar="ENDPOINT")
    for name, summary, handler in (
        ("get", "a batch's progress, SLA and cost (--watch: until it finishes)", _get),
        ("results", "every result as JSONL on stdout (or --out FILE)", _results),
        ("cancel", "cancel queued requests (not billed); running ones finish", _cancel),
    ):
        p = add_command(bsub, common, name, summary, f"tide batch {name} my-model batch_0123abcd", handler)
        p.add_argument("endpoint", metavar="ENDPOINT")
        p.add_argument("batch", metavar="BATCH")
        if name == "get":
            p.add_argument("--watch", action="store_true", help="refresh until the batch finishes")
        if name == "results":
            p.add_argument("--out", help="write to this file instead of stdout")


def sla_hours(text: str) -> float:
    units = {"m": 1 / 60, "h": 1.0, "d": 24.0}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise UsageError(f"--sla {text!r}: give a duration like 8h, 90m or 2d") from None


def _submit(args: argparse.Namespace, ctx: Context) -> int:
    query: dict[str, object] = {"finalize": "true", "name": args.name, "maxPricePerGpuHour": args.max_price}
    if args.sla:
        query["slaHours"] = sla_hours(args.sla)
    path = f"/v2/{seg(args.endpoint)}/batch"
    if args.file == "-":
        ref = ctx.client.upload(path, sys.stdin.buffer.read(), "application/x-ndjson", **query)
    else:
        if not os.path.isfile(args.file):
            raise UsageError(f"{args.file}: no such file (give a JSONL file, or '-' for stdin)")
        with open(args.file, "rb") as f:
            ref = ctx.client.upload(path, f, "application/x-ndjson", **query)
    if args.wait:
        return _watch(ctx, args.endpoint, ref["id"])
    return ctx.emit(
        ref,
        lambda: ctx.say(
            f"{ref['id']} {ref['status']}\nprogress: tide batch get {args.endpoint} {ref['id']} --watch"
        ),
    )


def _ls(args: argparse.Namespace, ctx: Context) -> int:
    batches = ctx.client.get(f"/v2/{seg(args.endpoint)}/batch")
    rows = [
        [b["id"], b.get("name", ""), b["status"], _progress(b), ago(b["createdAt"] / 1000, ctx.now)]
        for b in batches
    ]
    empty = f"no batches on {args.endpoint}; submit one with 'tide batch submit {args.endpoint} FILE.jsonl'"
    return ctx.emit(
        batches, lambda: ctx.say(table(["ID", "NAME", "STATUS", "DONE", "CREATED"], rows, empty=empty))
    )


def _get(args: argparse.Namespace, ctx: Context) -> int:
    if args.watch:
        return _watch(ctx, args.endpoint, args.batch)
    b = ctx.client.get(f"/v2/{seg(args.endpoint)}/batch/{seg(args.batch)}")
    return ctx.emit(b, lambda: ctx.say(_describe(b)))


def _results(args: argparse.Namespace, ctx: Context) -> int:
    path = f"/v2/{seg(args.endpoint)}/batch/{seg(args.batch)}/results"
    if args.out:
        with open(args.out, "wb") as f:
            ctx.client.download(path, f)
    else:
        ctx.client.download(path, sys.stdout.buffer)
    return 0


def _cancel(args: argparse.Namespace, ctx: Context) -> int:
    ref = ctx.client.post(f"/v2/{seg(args.endpoint)}/batch/{seg(args.batch)}/cancel")
    return ctx.emit(
        ref, lambda: ctx.say(f"{ref['id']}: cancelling; running requests finish, queued ones are not billed")
    )


def _watch(ctx: Context, ep: str, batch: str) -> int:
    path = f"/v2/{seg(ep)}/batch/{seg(batch)}"
    b = ctx.client.get(path)
    while not (b.get("finishedAt") or b["status"] in ("CANCELLED", "FAILED")):
        if not ctx.json:
            ctx.err.write(f"\r{batch}: {_progress(b)} {_bar(b)}   ")
            ctx.err.flush()
        time.sleep(1.0)
        b = ctx.client.get(path)
    if not ctx.json:
        ctx.err.write(f"\r{batch}: {_progress(b)} {_bar(b)}\n")
    return ctx.emit(b, lambda: ctx.say(_describe(b)))


def _progress(b: dict[str, Any]) -> str:
    done = b["requestCompleted"] + b["requestFailed"] + b.get("requestCancelled", 0)
    return f"{done}/{b['requestTotal']}"


def _bar(b: dict[str, Any], width: int = 30) -> str:
    total = max(1, b["requestTotal"])
    filled = int(width * (b["requestCompleted"] + b["requestFailed"]) / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _describe(b: dict[str, Any]) -> str:
    pairs: list[tuple[str, object]] = [
        ("id", b["id"]),
        ("status", b["status"] + (" (finished)" if b.get("finishedAt") else "")),
        (
            "requests",
            f"{b['requestTotal']} total, {b['requestCompleted']} completed, {b['requestFailed']} failed, "
            f"{b.get('requestCancelled', 0)} cancelled, {b['requestInProgress']} running",
        ),
    ]
    if sla := b.get("sla"):
        risk = f"AT RISK: {sla.get('note', '')}" if sla.get("atRisk") else "on track"
        pairs.append(("sla", f"{sla['hours']:g} h, {risk}, {sla.get('workers', 0)} workers"))
    if cost := b.get("cost"):
        per = ", ".join(f"{k}: {v:.1f} GPU-s" for k, v in cost["gpuSeconds"].items()) or "none yet"
        pairs.append(("cost", f"${cost['usd']:.4f} ({per}; {cost['requestsRun']} runs)"))
    return kv_block(pairs)
