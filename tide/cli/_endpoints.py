"""``tide endpoint create|list|get|update|delete``."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from typing import Any

from tide.cli._context import Context, seg
from tide.cli._errors import CliError, UsageError
from tide.cli._format import ago, duration, kv_block, table
from tide.cli._parsing import Subparsers, add_command

__all__ = ["register"]

# flag dest -> wire field (RunPod REST v1 names); order is the order of `get`
_FIELDS = {
    "image": "image",
    "command": "command",
    "args": "args",
    "env": "env",
    "gpu": "gpuTypeIds",
    "gpu_count": "gpuCount",
    "min": "workersMin",
    "max": "workersMax",
    "idle_timeout": "idleTimeout",
    "scaler": "scalerType",
    "scaler_value": "scalerValue",
    "flashboot": "flashboot",
    "execution_timeout_ms": "executionTimeoutMs",
    "data_center": "dataCenterIds",
    "max_job_retries": "maxJobRetries",
    "concurrency": "concurrencyPerWorker",
    "network_volume": "networkVolumeId",
}
_FLAG_OF = {field: "--" + dest.replace("_", "-") for dest, field in _FIELDS.items()}
_FLAG_OF["name"] = "NAME"


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    ep = add_command(
        sub,
        common,
        "endpoint",
        "create, inspect, change and delete endpoints",
        "tide endpoint list\ntide endpoint get my-model",
        subcommands=True,
    )
    epsub = ep.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = add_command(
        epsub,
        common,
        "create",
        "create an endpoint (its id is its name: /v2/NAME/run)",
        "tide endpoint create sd --image reg.local/sd:1 --gpu H100-80GB:3g.40gb --gpu A100-80GB --max 4\n"
        "tide endpoint create --from-file spec.json",
        _create,
    )
    create.add_argument("name", nargs="?", metavar="NAME", help='endpoint name (or "name" in --from-file)')
    _spec_flags(create)
    update = add_command(
        epsub,
        common,
        "update",
        "change some fields of an endpoint; the rest keep their values",
        "tide endpoint update sd --max 8 --idle-timeout 30\ntide endpoint update sd --image reg.local/sd:2",
        _update,
    )
    update.add_argument("name", metavar="NAME")
    _spec_flags(update)
    _register_reads(epsub, common)


def _register_reads(epsub: Subparsers, common: argparse.ArgumentParser) -> None:
    add_command(
        epsub, common, "list", "all endpoints with queue and worker counts", "tide endpoint list", _list
    )
    get = add_command(
        epsub,
        common,
        "get",
        "one endpoint's config and health (jobs, workers, why not placed)",
        "tide endpoint get sd",
        _get,
    )
    get.add_argument("name", metavar="NAME")
    delete = add_command(
        epsub,
        common,
        "delete",
        "delete an endpoint and purge its queued jobs",
        "tide endpoint delete sd",
        _delete,
    )
    delete.add_argument("name", metavar="NAME")


def _spec_flags(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--from-file", metavar="FILE", help="JSON with RunPod REST v1 fields (flags override it)")
    a("--image", help="OCI image reference or dir:///path")
    a(
        "--gpu",
        action="append",
        metavar="TYPE",
        help="GPU type, MIG profile (H100-80GB:3g.40gb) or class (mig-24gb); repeat or comma-separate, "
        "in order of preference; 'any' for any GPU",
    )
    a("--gpu-count", type=int, metavar="N", help="whole GPUs per worker (1-8)")
    a("--min", type=int, metavar="N", help="workers kept running (workersMin)")
    a("--max", type=int, metavar="N", help="worker ceiling (workersMax)")
    a("--idle-timeout", type=int, metavar="S", help="seconds a worker idles before it stops")
    a("--scaler", type=str.upper, choices=["QUEUE_DELAY", "REQUEST_COUNT"], help="autoscaler type")
    a("--scaler-value", type=int, metavar="N", help="seconds of queue delay, or requests per worker")
    a(
        "--flashboot",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep idle models warm on the host",
    )
    a("--execution-timeout-ms", type=int, metavar="N", help="job time limit in ms")
    a("--data-center", action="append", metavar="DC", help="allowed data centers; repeat; 'any' for all")
    a(
        "--env",
        action="append",
        metavar="K=V",
        help="environment variable; repeat (update replaces the whole set)",
    )
    a("--command", metavar="CMD", help="entrypoint override: a shell-quoted string or a JSON list")
    a("--args", metavar="ARGS", help="arguments: a shell-quoted string or a JSON list")
    a("--max-job-retries", type=int, metavar="N", help="requeues of a job before it FAILs")
    a("--concurrency", type=int, metavar="N", help="jobs one worker runs at once (concurrencyPerWorker)")
    a("--network-volume", metavar="ID", help="network volume id")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The wire fields the command line sets (only those given)."""
    out: dict[str, Any] = {}
    for dest, field in _FIELDS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest in ("gpu", "data_center"):
            value = _split_list(value)
        elif dest == "env":
            value = _env(value)
        elif dest in ("command", "args"):
            value = _argv(value, "--" + dest)
        out[field] = value
    return out


def _split_list(values: list[str]) -> list[str]:
    items = [v.strip() for raw in values for v in raw.split(",") if v.strip()]
    return [] if items == ["any"] else items


def _env(values: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--env takes KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def _argv(value: str, flag: str) -> list[str]:
    if value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise UsageError(f"{flag}: not a JSON list: {exc}") from None
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise UsageError(f"{flag}: the JSON must be a list of strings")
        return parsed
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _from_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object of endpoint fields")
    return data


def _with_flag_hint(err: CliError) -> CliError:
    """Name the flag behind a field the server rejected (it speaks in wire names)."""
    if err.status != 400:
        return err
    flags = [flag for field, flag in _FLAG_OF.items() if re.search(rf"\b{field}\b", err.message)]
    if flags:
        err.hint = (
            "fix " + " / ".join(dict.fromkeys(flags)) + "; 'tide endpoint create --help' lists the limits"
        )
    return err


def _create(args: argparse.Namespace, ctx: Context) -> int:
    body = _from_file(args.from_file) | _fields(args)
    if args.name:
        body["name"] = args.name
    if not body.get("name"):
        raise UsageError('endpoint create needs NAME (or "name" in --from-file)')
    if not body.get("image"):
        raise UsageError('endpoint create needs --image (or "image" in --from-file)')
    try:
        created = ctx.client.post("/admin/v1/endpoints", body)
    except CliError as err:
        raise _with_flag_hint(err) from None

    def human() -> None:
        ctx.say(f"created endpoint {created['id']}")
        ctx.say(_describe(created, ctx.now))
        ctx.note(
            f'send a job:  curl -H "Authorization: Bearer $KEY" -d \'{{"input": {{}}}}\' '
            f"{ctx.client.base_url}/v2/{created['id']}/run"
        )

    return ctx.emit(created, human)


def _update(args: argparse.Namespace, ctx: Context) -> int:
    body = _from_file(args.from_file) | _fields(args)
    if not body:
        raise UsageError("nothing to change: give at least one flag (see 'tide endpoint update --help')")
    try:
        updated = ctx.client.patch(f"/admin/v1/endpoints/{seg(args.name)}", body)
    except CliError as err:
        raise _with_flag_hint(err) from None

    def human() -> None:
        ctx.say(f"updated endpoint {updated['id']} (version {updated.get('version', '?')})")
        ctx.say(_describe(updated, ctx.now))

    return ctx.emit(updated, human)


def _list(args: argparse.Namespace, ctx: Context) -> int:
    eps = ctx.client.get("/admin/v1/endpoints")
    rows = []
    for e in eps:
        jobs, workers = _health(e)
        rows.append(
            [
                e["id"],
                e.get("image", ""),
                _gpus(e),
                f"{e.get('workersMin', 0)}-{e.get('workersMax', 0)}",
                jobs.get("inQueue", 0),
                jobs.get("inProgress", 0),
                sum(workers.values()),
                ago(e.get("createdAt"), ctx.now),
            ]
        )
    headers = ["NAME", "IMAGE", "GPUS", "MIN-MAX", "QUEUED", "RUNNING", "WORKERS", "CREATED"]
    empty = "no endpoints yet; create one with 'tide endpoint create NAME --image IMAGE'"
    return ctx.emit(eps, lambda: ctx.say(table(headers, rows, empty=empty)))


def _get(args: argparse.Namespace, ctx: Context) -> int:
    e = ctx.client.get(f"/admin/v1/endpoints/{seg(args.name)}")

    def human() -> None:
        ctx.say(f"endpoint {e['id']}")
        ctx.say(_describe(e, ctx.now))
        ctx.say(_health_text(e))
        if e.get("lastColdStart"):
            ctx.say(_cold_start_text(e["lastColdStart"], ctx.now))

    return ctx.emit(e, human)


def _cold_start_text(cold: dict[str, Any], now: float) -> str:
    """The endpoint's last scale-from-zero, stage by stage (the worker's own stages once in)."""
    pairs: list[tuple[str, object]] = []
    for s in cold.get("stages") or []:
        tier = f"  (from {s['tier']})" if s.get("tier") else ""
        pairs.append((str(s.get("stage", "?")).replace("_", " "), f"{s.get('ms', 0):.1f} ms{tier}"))
    pairs.append(("total", f"{cold.get('totalMs', 0):.1f} ms"))
    if cold.get("reason"):
        pairs.append(("resume failed", str(cold["reason"])))
    # "resume": a suspended worker thawed in place; "fresh": a new process (or a failed resume)
    how = "resume of " if cold.get("path") == "resume" else ""
    head = f"last cold start ({how}{cold.get('workerId', '?')} on {cold.get('nodeId', '?')}"
    head += f", {ago(cold.get('finishedAt'), now)})"
    return head + "\n" + kv_block(pairs, indent=2)


def _delete(args: argparse.Namespace, ctx: Context) -> int:
    res = ctx.client.delete(f"/admin/v1/endpoints/{seg(args.name)}")
    return ctx.emit(res, lambda: ctx.say(f"deleted endpoint {args.name}; its queued jobs were purged"))


def _gpus(e: dict[str, Any]) -> str:
    types = ",".join(e.get("gpuTypeIds") or []) or "any"
    count = e.get("gpuCount", 1)
    return types if count == 1 else f"{count}x {types}"


def _describe(e: dict[str, Any], now: float) -> str:
    env = e.get("env") or {}
    pairs: list[tuple[str, object]] = [
        ("image", e.get("image", "")),
        ("command", shlex.join(e.get("command") or []) or "(image default)"),
        ("args", shlex.join(e.get("args") or []) or "-"),
        ("gpus", _gpus(e) + ("  (in order of preference)" if len(e.get("gpuTypeIds") or []) > 1 else "")),
        (
            "workers",
            f"{e.get('workersMin', 0)} min, {e.get('workersMax', 0)} max, "
            f"idle timeout {duration(e.get('idleTimeout', 0))}",
        ),
        ("scaler", f"{e.get('scalerType', '?')} {e.get('scalerValue', '?')}"),
        ("flashboot", "on" if e.get("flashboot") else "off"),
        ("job timeout", duration(e.get("executionTimeoutMs", 0) / 1000)),
        ("job retries", e.get("maxJobRetries", "-")),
        ("data centers", ", ".join(e.get("dataCenterIds") or []) or "any"),
        ("env", ", ".join(sorted(env)) + "  (values: --json)" if env else "-"),
        ("version", f"{e.get('version', '?')}, created {ago(e.get('createdAt'), now)}"),
    ]
    return kv_block(pairs, indent=2)


def _health(e: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    health = e.get("health") or {}
    return health.get("jobs") or {}, health.get("workers") or {}


def _health_text(e: dict[str, Any]) -> str:
    jobs, workers = _health(e)
    job_line = (
        f"{jobs.get('inQueue', 0)} queued, {jobs.get('inProgress', 0)} in progress, "
        f"{jobs.get('completed', 0)} completed, {jobs.get('failed', 0)} failed, "
        f"{jobs.get('retried', 0)} retried"
    )
    up = ", ".join(f"{n} {state}" for state, n in workers.items() if n) or "none"
    pairs: list[tuple[str, object]] = [("jobs", job_line), ("workers", up)]
    placement = e.get("placement")
    if placement:
        pairs.append(("not placed", _placement_text(placement)))
    return "health\n" + kv_block(pairs, indent=2)


def _placement_text(placement: object) -> str:
    if isinstance(placement, dict):
        for key in ("reason", "message", "error"):
            if placement.get(key):
                return str(placement[key])
        return json.dumps(placement)
    if isinstance(placement, list):
        return "; ".join(_placement_text(p) for p in placement)
    return str(placement)
