"""Human output: aligned tables, relative times, short durations.  Pure
functions of their arguments (``now`` is passed in) so tests can pin them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

__all__ = ["ago", "dump_json", "duration", "field", "kv_block", "table", "to_unix"]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str = "") -> str:
    """Columns padded to their widest cell, two spaces apart; ``empty`` when no rows."""
    if not rows:
        return empty
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def kv_block(pairs: Sequence[tuple[str, object]], indent: int = 0) -> str:
    """``key:  value`` lines with the values aligned."""
    width = max((len(k) for k, _ in pairs), default=0) + 1
    pad = " " * indent
    return "\n".join(f"{pad}{(k + ':').ljust(width)}  {v}" for k, v in pairs)


def duration(seconds: float) -> str:
    """45s, 12m, 3h5m, 2d4h: the two largest units, short."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m" + (f"{s % 60}s" if s < 600 and s % 60 else "")
    if s < 86400:
        return f"{s // 3600}h" + (f"{s % 3600 // 60}m" if s % 3600 >= 60 else "")
    return f"{s // 86400}d" + (f"{s % 86400 // 3600}h" if s % 86400 >= 3600 else "")


def to_unix(value: object) -> float | None:
    """Unix seconds from a number or an ISO-8601 string; None when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def ago(value: object, now: float) -> str:
    """Relative time: "3m ago", "just now", "in 2h"; "-" when there is no time."""
    ts = to_unix(value)
    if ts is None:
        return "-"
    delta = now - ts
    if abs(delta) < 1:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(delta)}"


def dump_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def field(obj: object, name: str, default: Any = None) -> Any:
    """``obj[name]`` for a camelCase name, falling back to its snake_case spelling
    (node inventories may arrive either way); ``default`` when absent."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in name)
    return obj.get(snake, default)
