"""``tide.App``: decorated functions that become endpoints (``tide deploy``).

Options are checked when the decorator runs, with errors that name the option, so a typo fails
at import on the developer's machine and never on a worker.  Calls are explicit: ``fn.local()``
runs in this process (``fn(...)`` too); nothing switches between local and remote by itself.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

__all__ = ["App", "Function", "OptionError", "input_for"]

P = ParamSpec("P")
R = TypeVar("R")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_OPTIONS = (
    "gpu", "gpu_count", "workers", "idle_timeout", "execution_timeout", "concurrency", "flashboot",
    "data_centers", "dependencies", "env", "preflight", "cpus", "memory_mb",
)  # fmt: skip


class OptionError(TypeError):
    """A decorator option is unknown or out of range; the message names it and what fits."""


def _str_list(option: str, value: object) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v for v in items):
        raise OptionError(f"{option}= takes a string or a list of strings, not {value!r}")
    return list(items)


def _int(option: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise OptionError(f"{option}= must be a whole number from {lo} to {hi}, not {value!r}")
    return value


def _workers(value: object) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (0, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise OptionError(f"workers= takes (min, max) or max, e.g. workers=(0, 3); not {value!r}")
    lo, hi = _int("workers", value[0], 0, 1000), _int("workers", value[1], 0, 1000)
    if lo > hi:
        raise OptionError(f"workers=({lo}, {hi}): the minimum is above the maximum")
    return lo, hi


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint fields (camelCase, EndpointSpec's) that ``options`` ask for."""
    for name in options:
        if name not in _OPTIONS:
            near = difflib.get_close_matches(name, _OPTIONS, n=1)
            hint = f"; did you mean {near[0]}=?" if near else f"; options: {', '.join(_OPTIONS)}"
            raise OptionError(f"unknown option {name}={options[name]!r}{hint}")
    o = dict(options)
    lo, hi = _workers(o.get("workers", (0, 3)))
    env = o.get("env", {})
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise OptionError(f"env= takes a dict of strings to strings, not {env!r}")
    if "preflight" in o and o["preflight"] is not None:
        try:
            json.dumps(o["preflight"])
        except (TypeError, ValueError) as e:
            raise OptionError(f"preflight= must be JSON (the test call's input): {e}") from None
    cpus = o.get("cpus", 0)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 <= cpus <= 1024:
        raise OptionError(f"cpus= must be a number from 0 to 1024, not {cpus!r}")
    return {
        "gpuTypeIds": _str_list("gpu", o["gpu"]) if o.get("gpu") else [],
        "gpuCount": _int("gpu_count", o.get("gpu_count", 1), 1, 8),
        "workersMin": lo,
        "workersMax": hi,
        "idleTimeout": _int("idle_timeout", o.get("idle_timeout", 5), 1, 3600),
        "executionTimeoutMs": 1000 * _int("execution_timeout", o.get("execution_timeout", 600), 5, 7 * 86400),
        "concurrencyPerWorker": _int("concurrency", o.get("concurrency", 1), 1, 1024),
        "flashboot": bool(o.get("flashboot", True)),
        "dataCenterIds": _str_list("data_centers", o.get("data_centers", [])),
        "cpus": float(cpus),
        "memoryMb": _int("memory_mb", o.get("memory_mb", 0), 0, 16 << 20),
        "env": dict(env),
        "dependencies": sorted(set(_str_list("dependencies", o.get("dependencies", [])))),
        "preflight": o.get("preflight"),
    }


def input_for(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """The job input a call sends: the arguments by parameter name (``{"text": "hi"}``), which
    any RunPod client can send too; the worker binds them back (tide/sdk/_worker.py)."""
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{fn.__name__}{inspect.signature(fn)}: {e}") from None
    return dict(bound.arguments)


class Function(Generic[P, R]):
    """A decorated function: call it (or ``.local``) to run it here; ``tide deploy`` makes it an
    endpoint named ``<app>.<function>``."""

    def __init__(self, app: App, fn: Callable[P, R], fields: dict[str, Any]) -> None:
        self.app, self.fn, self.fields = app, fn, fields
        self.__wrapped__ = fn  # what the worker calls
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    @property
    def endpoint(self) -> str:
        return f"{self.app.name}.{self.fn.__name__}"

    @property
    def entry(self) -> str:
        return f"{self.fn.__module__}:{self.fn.__name__}"

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)


class App:
    """``app = tide.App("hello")``; ``@app.queue(gpu="H100-80GB", workers=(0, 3))`` on functions."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise OptionError(f"App name {name!r}: letters, digits, '-' and '_', at most 64, no dots")
        self.name = name
        self.functions: dict[str, Function[..., Any]] = {}

    @overload
    def queue(self, fn: Callable[P, R], /) -> Function[P, R]: ...
    @overload
    def queue(self, fn: None = None, /, **options: Any) -> Callable[[Callable[P, R]], Function[P, R]]: ...

    def queue(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """A queue endpoint per function (RunPod's /run, /runsync, /stream).  Options: gpu (a
        type, a MIG profile or a priority list), gpu_count, workers=(min, max), idle_timeout and
        execution_timeout (s), concurrency, flashboot, data_centers, dependencies (pip
        requirements, installed once per host per set), env, preflight (a test call's input that
        must succeed before a new version takes traffic), cpus, memory_mb."""
        fields = check_options(options)

        def decorate(f: Callable[..., Any]) -> Function[..., Any]:
            if not callable(f) or inspect.isclass(f):
                raise OptionError(f"@{self.name}.queue decorates a function, not {f!r}")
            if f.__name__ in self.functions:
                raise OptionError(f"{self.name} already has a function named {f.__name__}")
            wrapped: Function[..., Any] = Function(self, f, fields)
            self.functions[f.__name__] = wrapped
            return wrapped

        return decorate(fn) if fn is not None else decorate
