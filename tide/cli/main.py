"""The ``tide`` command: a thin client of the coordinator's admin API.

Exit codes: 0 ok, 1 the coordinator said no (or could not be reached), 2 the
command line is wrong.  ``--json`` on any command prints the raw JSON answer on
stdout, and an error as ``{"error", "hint", "status"}`` on stderr.
This is the only module of the CLI that reads the environment.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tide.cli import _access, _batch, _cluster, _deploy, _endpoints, _gpus, _mig, _ops
from tide.cli._client import AdminClient
from tide.cli._context import Context
from tide.cli._errors import CliError, UsageError
from tide.cli._parsing import HelpFormatter

__all__ = ["build_parser", "main"]

DEFAULT_URL = "http://127.0.0.1:8420"
_KEY_FILE = Path("~/.config/tide/admin.key")

_EPILOG = """\
examples:
  tide dev                                         # a whole cluster on this machine
  tide deploy app.py                               # @app.queue functions -> endpoints, no Docker
  tide endpoint create sd --image registry.local/sd:1 --gpu H100-80GB:3g.40gb --max 4
  tide endpoint get sd                             # config, health, why not placed
  tide keys create web --endpoint sd               # a client key for /v2/sd/*
  tide jobs sd                                     # the queue
  tide gpus                                        # every card and its MIG slices
  tide mig plan gpu-07 0 3g.40gb,2g.20gb,1g.10gb   # where the slices would go (apply: do it)
  tide simulate --trace day.jsonl --fleet fleet.toml --policy best-static   # GPU-hours by policy
  tide endpoint list --json | jq '.[].id'          # scripts: --json on any command

connection: --url (or TIDE_URL, default http://127.0.0.1:8420); admin key: --api-key
(or TIDE_API_KEY, or the file ~/.config/tide/admin.key).
'tide COMMAND --help' shows each command's flags and an example."""


def _global_flags(p: argparse.ArgumentParser, *, inherited: bool) -> None:
    # On subcommands the defaults are SUPPRESS so `tide --json endpoint list` and
    # `tide endpoint list --json` both work without one overwriting the other.
    default: Any = argparse.SUPPRESS if inherited else None
    g = p.add_argument_group("connection and output")
    g.add_argument("--url", metavar="URL", default=default, help=f"coordinator URL (TIDE_URL; {DEFAULT_URL})")
    g.add_argument(
        "--api-key", metavar="KEY", default=default, help="admin key (TIDE_API_KEY, ~/.config/tide/admin.key)"
    )
    g.add_argument(
        "--json", action="store_true", default=default, help="print the raw JSON answer (for scripts)"
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_flags(common, inherited=True)
    p = argparse.ArgumentParser(
        prog="tide",
        description="Tide: serverless GPU inference on your own machines (RunPod Serverless compatible).",
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    _global_flags(p, inherited=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    _endpoints.register(sub, common)
    _deploy.register(sub, common)
    _access.register(sub, common)
    _batch.register(sub, common)
    _cluster.register(sub, common)
    _gpus.register(sub, common)
    _mig.register(sub, common)
    _ops.register(sub, common)  # after _cluster: it extends `tide nodes`
    # Listed for --help only: main() hands `tide dev ...` to tide.dev before argparse sees it.
    dev = sub.add_parser("dev", help="a whole cluster in one process, for development", add_help=False)
    dev.add_argument("argv", nargs=argparse.REMAINDER)
    dev.set_defaults(func=lambda args, _ctx: _run_dev(args.argv))
    sim = sub.add_parser(
        "simulate", help="replay a trace through the real planners (GPU-hours by policy)", add_help=False
    )
    sim.add_argument("argv", nargs=argparse.REMAINDER)
    sim.set_defaults(func=lambda args, _ctx: _run_simulate(args.argv))
    return p


def _dev_argv(argv: list[str], command: str = "dev") -> list[str] | None:
    """The arguments after ``dev`` (or ``command``) when the command is ``tide [global flags] dev ...``."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--url", "--api-key"):
            i += 2
        elif arg == "--json" or arg.startswith(("--url=", "--api-key=")):
            i += 1
        else:
            return argv[i + 1 :] if arg == command else None
    return None


def _run_dev(argv: list[str]) -> int:
    try:
        dev = importlib.import_module("tide.dev")  # lazy: it pulls in both daemons
    except ImportError as exc:
        if exc.name != "tide.dev":
            raise
        print("error: `tide dev` is not part of this build yet", file=sys.stderr)
        return 1
    code = dev.main(argv)
    return int(code or 0)


def _run_simulate(argv: list[str]) -> int:
    # Lazy, like tide dev: the simulator pulls in the planners and mig/, and needs no coordinator.
    sim = importlib.import_module("simulate")
    return int(sim.main(argv))


def _api_key(flag: str | None) -> str:
    if flag:
        return flag
    if env := os.environ.get("TIDE_API_KEY", "").strip():
        return env
    path = _KEY_FILE.expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise UsageError(f"cannot read the admin key file {path}: {exc.strerror}") from None


def _report(err: CliError, as_json: bool) -> None:
    if as_json:
        body = {"error": err.message, "hint": err.hint, "status": err.status}
        print(json.dumps(body), file=sys.stderr)
        return
    print(f"error: {err.message}", file=sys.stderr)
    if err.hint:
        print(f"hint: {err.hint}", file=sys.stderr)


def _exit_code(code: object) -> int:
    """argparse's SystemExit code as an int (None means 0; a message means usage error)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    dev_argv = _dev_argv(args_list)
    if dev_argv is not None:
        return _run_dev(dev_argv)
    sim_argv = _dev_argv(args_list, "simulate")
    if sim_argv is not None:
        return _run_simulate(sim_argv)
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return _exit_code(exc.code)
    as_json = bool(getattr(args, "json", False))
    try:
        url = getattr(args, "url", None) or os.environ.get("TIDE_URL", "") or DEFAULT_URL
        client = AdminClient(url, _api_key(getattr(args, "api_key", None)))
        ctx = Context(client=client, json=as_json, out=sys.stdout, err=sys.stderr, now=time.time())
        return int(args.func(args, ctx))
    except CliError as err:
        _report(err, as_json)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tide ... | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit on purpose
        return 1


if __name__ == "__main__":
    sys.exit(main())
