"""What every command handler gets: the client, the output streams, the clock."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

from tide.cli._client import AdminClient
from tide.cli._format import dump_json

__all__ = ["Context", "Handler", "seg"]


@dataclass(frozen=True, slots=True)
class Context:
    client: AdminClient
    json: bool  # --json: raw JSON on stdout, nothing else
    out: TextIO
    err: TextIO
    now: float  # unix seconds, read once by main

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        """Secondary information on stderr, so stdout stays clean for pipes."""
        self.err.write(text + "\n")

    def emit(self, data: Any, human: Callable[[], None]) -> int:
        """Raw JSON with --json, else the human rendering; exit code 0."""
        if self.json:
            dump_json(data, self.out)
        else:
            human()
        return 0


Handler = Callable[[argparse.Namespace, Context], int]


def seg(name: str) -> str:
    """A name as one URL path segment."""
    return quote(name, safe="")
