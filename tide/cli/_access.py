"""``tide keys``, ``tide jobs`` and ``tide worker-token``: who may call, what waits."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from tide.cli._context import Context, seg
from tide.cli._format import ago, table
from tide.cli._parsing import Subparsers, add_command

__all__ = ["register", "worker_env"]


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    _register_keys(sub, common)
    _register_jobs_and_token(sub, common)


def _register_keys(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    keys = add_command(
        sub,
        common,
        "keys",
        "API keys: clients (scope endpoints), operators (admin), dashboards (viewer), GPU hosts (node)",
        "tide keys create ci --endpoint sd\ntide keys create grafana --scope viewer\ntide keys list",
        subcommands=True,
    )
    ksub = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = add_command(
        ksub,
        common,
        "create",
        "make a key; its secret is printed once",
        "tide keys create web-frontend --endpoint sd --endpoint llm\ntide keys create ops --scope admin\n"
        "tide keys create prometheus --scope viewer\ntide keys create rack-12 --scope node",
        _create_key,
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--scope",
        choices=["endpoints", "admin", "viewer", "node"],
        default="endpoints",
        help="endpoints: call /v2 routes of its endpoints (default); admin: everything; viewer: "
        "read-only /admin/v1 GETs and /metrics (dashboards, Prometheus); node: tide-noded's "
        "join key, registers NEW GPU hosts only (a known host re-registers with its own node token)",
    )
    create.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="EP",
        help="limit the key to these endpoints; repeat (default: all)",
    )
    add_command(
        ksub, common, "list", "all keys (secrets are never shown again)", "tide keys list", _list_keys
    )
    revoke = add_command(
        ksub, common, "revoke", "revoke a key by id or name", "tide keys revoke 3f9a1c2b7d4e", _revoke_key
    )
    revoke.add_argument("id", metavar="ID")


def _register_jobs_and_token(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    jobs = add_command(
        sub,
        common,
        "jobs",
        "an endpoint's queue: queued, running and recent jobs",
        "tide jobs sd --limit 20",
        _jobs,
    )
    jobs.add_argument("endpoint", metavar="ENDPOINT")
    jobs.add_argument("--limit", type=int, default=50, metavar="N", help="rows to show (default 50)")

    token = add_command(
        sub,
        common,
        "worker-token",
        "RUNPOD_* env to run a worker by hand against this coordinator",
        "env $(tide worker-token sd w-laptop) python handler.py\n"
        'eval "$(tide worker-token sd w-laptop --shell)" && python handler.py',
        _worker_token,
    )
    token.add_argument("endpoint", metavar="ENDPOINT")
    token.add_argument("worker", metavar="WORKER", help="the worker id to use (RUNPOD_POD_ID)")
    token.add_argument("--gpu", default="manual", metavar="TYPE", help="the ?gpu= label in the URLs")
    token.add_argument("--shell", action="store_true", help="print `export K='V'` lines for eval")
    token.add_argument(
        "--ttl",
        type=int,
        default=None,
        metavar="SECONDS",
        help="how long the token is valid (default 7 days, 60 s to 30 days); deleting the endpoint "
        "ends it too",
    )


def _create_key(args: argparse.Namespace, ctx: Context) -> int:
    body = {"name": args.name, "scope": args.scope, "endpointIds": args.endpoint}
    key = ctx.client.post("/admin/v1/keys", body)

    def human() -> None:
        where = ", ".join(key.get("endpointIds") or []) or "all endpoints"
        ctx.say(f"created key {key['name']} (id {key['id']}, scope {key['scope']}: {where})")
        ctx.say(key["key"])
        ctx.note("save this secret now: it cannot be shown again (only its hash is stored)")

    return ctx.emit(key, human)


def _list_keys(args: argparse.Namespace, ctx: Context) -> int:
    found = ctx.client.get("/admin/v1/keys")
    rows = [
        [
            k["id"],
            k["name"],
            k["scope"],
            ", ".join(k.get("endpointIds") or []) or "all",
            ago(k.get("createdAt"), ctx.now),
            "revoked" if k.get("revoked") else "active",
        ]
        for k in found
    ]
    headers = ["ID", "NAME", "SCOPE", "ENDPOINTS", "CREATED", "STATE"]
    empty = "no keys yet; create one with 'tide keys create NAME'"
    return ctx.emit(found, lambda: ctx.say(table(headers, rows, empty=empty)))


def _revoke_key(args: argparse.Namespace, ctx: Context) -> int:
    key = ctx.client.delete(f"/admin/v1/keys/{seg(args.id)}")
    return ctx.emit(key, lambda: ctx.say(f"revoked key {key['name']} (id {key['id']})"))


def _jobs(args: argparse.Namespace, ctx: Context) -> int:
    res = ctx.client.get(f"/admin/v1/endpoints/{seg(args.endpoint)}/jobs", limit=args.limit)

    def human() -> None:
        jobs: dict[str, Any] = (res.get("health") or {}).get("jobs") or {}
        ctx.say(
            f"endpoint {res.get('endpointId', args.endpoint)}: {jobs.get('inQueue', 0)} queued, "
            f"{jobs.get('inProgress', 0)} in progress"
        )
        rows = [
            [
                j["id"],
                j["status"],
                ago(j.get("createdAt"), ctx.now),
                j.get("workerId") or "-",
                j.get("retries", 0),
            ]
            for j in res.get("jobs") or []
        ]
        ctx.say(table(["ID", "STATUS", "CREATED", "WORKER", "RETRIES"], rows, empty="no jobs"))

    return ctx.emit(res, human)


def worker_env(base_url: str, endpoint: str, worker: str, token: str, gpu: str) -> dict[str, str]:
    """The environment a RunPod worker needs to serve ``endpoint`` from ``base_url``.

    The URL templates are RunPod's (runpod_protocol.md §1.2): ``$ID`` and
    ``$RUNPOD_POD_ID`` stay literal for the SDK to fill in, and each carries a
    query string because the SDK appends ``&job_in_progress=...``.
    """
    from urllib.parse import quote_plus

    v2 = f"{base_url.rstrip('/')}/v2/{seg(endpoint)}"
    q = f"?gpu={quote_plus(gpu)}"
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{v2}/job-take/$ID{q}",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{v2}/job-done/$RUNPOD_POD_ID/$ID{q}",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{v2}/job-stream/$RUNPOD_POD_ID/$ID{q}",
        "RUNPOD_WEBHOOK_PING": f"{v2}/ping/$RUNPOD_POD_ID{q}",
        "RUNPOD_AI_API_KEY": token,
        "RUNPOD_POD_ID": worker,
        "RUNPOD_ENDPOINT_ID": endpoint,
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
    }


def _worker_token(args: argparse.Namespace, ctx: Context) -> int:
    path = f"/admin/v1/endpoints/{seg(args.endpoint)}/workers/{seg(args.worker)}/token"
    if args.ttl is not None:
        path += f"?ttl_s={args.ttl}"
    res = ctx.client.post(path)
    env = worker_env(
        ctx.client.base_url,
        res.get("endpointId", args.endpoint),
        res.get("workerId", args.worker),
        res["token"],
        args.gpu,
    )

    def human() -> None:
        for k, v in env.items():
            ctx.say(f"export {k}={shlex.quote(v)}" if args.shell else f"{k}={v}")

    return ctx.emit(env, human)
