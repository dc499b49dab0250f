"""argparse plumbing shared by the command modules: one way to add a command
with a one-line help, a description and an example epilog."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from tide.cli._context import Handler

__all__ = ["HelpFormatter", "Subparsers", "add_command"]

# argparse has no public name for it; a string alias costs nothing at runtime
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps epilog examples as written and gives command names room (worker-token)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        # argparse measures subcommand names one indent level short of where it
        # prints them, so the longest one ("worker-token") would wrap; measure it right.
        if isinstance(action, argparse._SubParsersAction):
            for sub in action._get_subactions():
                width = (
                    len(self._format_action_invocation(sub)) + self._current_indent + self._indent_increment
                )
                self._action_max_length = max(self._action_max_length, width)


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
        formatter_class=HelpFormatter,
        parents=[] if subcommands else [common],
    )
    if handler is not None:
        p.set_defaults(func=handler)
    return p
