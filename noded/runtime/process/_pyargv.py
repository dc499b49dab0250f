"""Which launches the prewarm pool can fork: the Python command forms people write.  Stdlib only.

``plan_python_launch(argv, interpreter)`` reads a worker's argv the way the
interpreter would and answers ``Fork`` (run ``script`` with ``args`` under
``flags`` in a fork of a warm zygote) or ``Exec`` (start it fresh, with the
reason).  It accepts ``python``/``python3`` (noded maps both to its own
interpreter for ``dir://`` images) or the interpreter's own path, then any of
the flags below, alone or bundled (``-uB``, ``-OO``), then a script path
(relative or absolute) and its arguments.  Everything else — ``-c``, ``-m``,
``-X``/``-W``, ``-I``, stdin, another interpreter, a shell — is exec'd.

Both sides use it: noded to decide whether to ask the zygote at all, and the
zygote (which imports this file beside it, as it does ``_shim``) to run what
was decided.  Flags and what a fork does for them:

* ``-u``: the worker's stdout/stderr are unbuffered (otherwise they are rebuilt
  buffered, as a fresh interpreter writing to a file has them);
* ``-B``: ``sys.dont_write_bytecode``;
* ``-s``: no user site-packages (the zygote then need not refuse for one);
* ``-E``: PYTHON* variables are ignored;
* ``-O``/``-OO``: the optimisation level is fixed when an interpreter starts,
  so the pool forks these from a zygote started with the same level.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ALIASES", "FORKABLE_FLAGS", "Exec", "Fork", "plan_python_launch"]

ALIASES = ("python", "python3")
FORKABLE_FLAGS = frozenset("uBsEO")


@dataclass(frozen=True)
class Fork:
    """Run ``script`` as ``__main__`` with ``sys.argv = [script, *args]``.

    ``flags``: the letters given, canonical ("O" or "OO" first, then the others sorted, once each)."""

    script: str
    args: tuple[str, ...] = ()
    flags: str = ""

    @property
    def optimize(self) -> int:
        return min(self.flags.count("O"), 2)

    @property
    def start_flags(self) -> tuple[str, ...]:
        """The interpreter flags its zygote must have been started with."""
        return ("-" + "O" * self.optimize,) if self.optimize else ()


@dataclass(frozen=True)
class Exec:
    reason: str


def _is_interpreter(argv0: str, interpreter: str) -> bool:
    if argv0 in ALIASES:
        return True
    return os.path.isabs(argv0) and os.path.normpath(argv0) == os.path.normpath(interpreter)


def plan_python_launch(argv: Sequence[str], interpreter: str) -> Fork | Exec:
    """Pure: how the process runtime should start ``argv`` given noded's ``interpreter``."""
    if not argv or not _is_interpreter(argv[0], interpreter):
        return Exec(f"{argv[0] if argv else 'an empty command'!r} is not {interpreter} (or python/python3)")
    flags = ""
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        opt = argv[i]
        if opt in ("-", "--") or opt.startswith("--"):
            return Exec(f"the option {opt!r} is not one the pool forks")
        unknown = sorted(set(opt[1:]) - FORKABLE_FLAGS)
        if unknown:
            return Exec(f"the flag -{unknown[0]} is not one the pool forks (only -u -B -s -E -O)")
        flags += opt[1:]
        i += 1
    if i >= len(argv) or not argv[i]:
        return Exec("no script to run")
    canonical = "O" * min(flags.count("O"), 2) + "".join(sorted(set(flags) - {"O"}))
    return Fork(script=argv[i], args=tuple(argv[i + 1 :]), flags=canonical)
