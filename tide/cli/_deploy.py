"""``tide deploy FILE_OR_DIR``: decorated functions become endpoints, without an image.

Steps: import the app here (its ``@app.queue`` functions and their options), pack the code into a
content-addressed bundle (tide/sdk/_bundle.py), upload it unless the cluster has it, then per
function: nothing if the endpoint already runs exactly this; else a canary's pre-flight
(_preflight.py) and, only when it passes, create or update the endpoint ``<app>.<function>``.
A failed pre-flight leaves the running version serving and exits 1 with the stage and the log.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from tide.api.bundles import bundle_image
from tide.cli._context import Context, seg
from tide.cli._errors import CliError, UsageError
from tide.cli._parsing import Subparsers, add_command
from tide.cli._preflight import run_preflight
from tide.sdk import App, Function, bundle_files, pack

__all__ = ["endpoint_spec", "load_functions", "register"]

_EXAMPLE = """\
tide deploy app.py                      # app.py and the local modules it imports
tide deploy ./svc                       # the whole directory; its app.py holds the app
tide deploy app.py --function embed     # only one function
tide deploy app.py --json | jq '.[].preflight'

# app.py
import tide
app = tide.App("hello")

@app.queue(gpu="H100-80GB:1g.10gb", workers=(0, 3), preflight={"text": "hi"})
def embed(text: str) -> list[float]: ...

# then: POST /v2/hello.embed/runsync {"input": {"text": "hi"}} with any RunPod client"""


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        common,
        "deploy",
        "deploy the @app.queue functions of a Python file or directory as endpoints (no Docker)",
        _EXAMPLE,
        _deploy,
    )
    p.add_argument("target", metavar="FILE_OR_DIR", help="app.py, or a directory with an app.py")
    p.add_argument("--function", action="append", default=[], metavar="NAME", help="only these (repeatable)")
    p.add_argument(
        "--preflight-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="how long the canary may take (300)",
    )
    p.add_argument("--no-preflight", action="store_true", help="move traffic without a canary (not advised)")


def load_functions(target: str) -> list[Function[..., Any]]:
    """Import the app's module here, as the worker will, and return its decorated functions."""
    t = Path(target).resolve()
    entry = t / "app.py" if t.is_dir() else t
    if not entry.is_file() or entry.suffix != ".py":
        raise UsageError(f"{target}: give app.py, or a directory holding an app.py")
    sys.path.insert(0, str(entry.parent))
    spec = importlib.util.spec_from_file_location(entry.stem, entry)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[entry.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the developer's code: say where, not our traceback
        raise CliError(
            f"importing {entry} failed: {type(e).__name__}: {e}", hint="fix it and deploy again"
        ) from None
    fns = [f for v in vars(module).values() if isinstance(v, App) for f in v.functions.values()]
    if not fns:
        raise UsageError(f"{entry} has no @app.queue functions: see `tide deploy --help` for an example")
    return fns


def endpoint_spec(fn: Function[..., Any], sha: str) -> dict[str, Any]:
    """The endpoint that runs ``fn`` from bundle ``sha`` (EndpointSpec's JSON)."""
    f = dict(fn.fields)
    env = {**f.pop("env"), "TIDE_ENTRY": fn.entry}
    deps, preflight = f.pop("dependencies"), f.pop("preflight")
    if deps:
        env["TIDE_DEPENDENCIES"] = json.dumps(deps)
    if preflight is not None:
        env["TIDE_PREFLIGHT"] = json.dumps(preflight)
    return {"name": fn.endpoint, "image": bundle_image(sha), "env": env, **f}


def _current(ctx: Context, name: str) -> dict[str, Any] | None:
    try:
        got: dict[str, Any] = ctx.client.get(f"/admin/v1/endpoints/{seg(name)}")
    except CliError as e:
        if e.status == 404:
            return None
        raise
    return got


def _upload(ctx: Context, target: str) -> tuple[str, int, bool]:
    try:
        bundle = pack(*bundle_files(target))
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        ctx.client.get(f"/admin/v1/bundles/{bundle.sha256}")
        return bundle.sha256, len(bundle.data), False
    except CliError as e:
        if e.status != 404:
            raise
    ctx.client.put_bytes(f"/admin/v1/bundles/{bundle.sha256}", bundle.data, "application/x-tar")
    return bundle.sha256, len(bundle.data), True


def _one(ctx: Context, fn: Function[..., Any], sha: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = endpoint_spec(fn, sha)
    cur = _current(ctx, fn.endpoint)
    row: dict[str, Any] = {"endpoint": fn.endpoint, "bundle": sha, "preflight": None}
    if cur is not None and all(cur.get(k) == v for k, v in spec.items()):
        return {**row, "action": "unchanged"}
    if not args.no_preflight:
        pf = run_preflight(ctx.client, spec, timeout_s=args.preflight_timeout)
        row["preflight"] = msgspec.to_builtins(pf)
        if not pf.ok:
            return {**row, "action": "kept" if cur else "not created"}
    if cur is None:
        ctx.client.post("/admin/v1/endpoints", spec)
        return {**row, "action": "created"}
    ctx.client.patch(
        f"/admin/v1/endpoints/{seg(fn.endpoint)}", {k: v for k, v in spec.items() if k != "name"}
    )
    return {**row, "action": "updated"}


def _deploy(args: argparse.Namespace, ctx: Context) -> int:
    fns = [f for f in load_functions(args.target) if not args.function or f.fn.__name__ in args.function]
    if not fns:
        raise UsageError(f"no function named {', '.join(args.function)} in {args.target}")
    sha, size, uploaded = _upload(ctx, args.target)
    if not ctx.json:
        ctx.note(f"bundle {sha[:12]} ({size / 1024:.1f} KiB, {'uploaded' if uploaded else 'already stored'})")
    rows = [_one(ctx, fn, sha, args) for fn in fns]
    ctx.emit(rows, lambda: _show(ctx, rows))
    return 0 if all(r["action"] in ("created", "updated", "unchanged") for r in rows) else 1


def _show(ctx: Context, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        pf = r["preflight"]
        check = f" (pre-flight passed at {pf['stage']} in {pf['seconds']:.1f} s)" if pf and pf["ok"] else ""
        ctx.say(f"{r['endpoint']}: {r['action']}{check}")
        if pf and not pf["ok"]:
            kept = "the running version keeps serving" if r["action"] == "kept" else "nothing was created"
            ctx.say(f"  pre-flight FAILED at stage {pf['stage']} after {pf['seconds']:.1f} s; {kept}")
            ctx.say("  " + pf["error"].replace("\n", "\n  "))
            if pf["log_tail"]:
                ctx.say("  canary log (last lines):")
                ctx.say("    " + "\n    ".join(pf["log_tail"]))
