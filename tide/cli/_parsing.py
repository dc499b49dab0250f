"""argparse plumbing shared by the command modules: one way to add a command
with a one-line help, a description and an example epilog."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from tide.cli._context import Handler

__all__ = ["Subparsers", "add_command"]

# argparse has no public name for it; a string alias costs nothing at runtime
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    sub: Subparsers,
    common: argparse.ArgumentParser,
    name: str,
    summary: str,
    example: str,
    handler: Handler | None = None,
    *,
    subcommands: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows ``summary`` and ``example``; the global
    flags (``common``) are accepted after it too, e.g. ``tide endpoint list --json``."""
    lines = example.splitlines()
    examples = "\n".join("  " + line for line in lines)
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=("examples:\n" if len(lines) > 1 else "example:\n") + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[] if subcommands else [common],
    )
    if handler is not None:
        p.set_defaults(func=handler)
    return p
