"""The worker loop of a deployed bundle, run by path (``python -u _worker.py``): stdlib and runpod.

noded's bundle hook starts it with the bundle unpacked read-only at ``$TIDE_BUNDLE_DIR``, the
dependency set's packages at ``$TIDE_ENV_DIR`` (optional) and ``$TIDE_ENTRY`` = "module:function".
The paths go onto ``sys.path`` here, not through PYTHONPATH, because a prewarmed worker is a fork
of an interpreter that has already read its environment.

The import happens once, before the loop.  If it fails, the worker still serves: every job gets
the stage and the traceback as its error, so a canary's pre-flight (and a caller) can say why,
instead of a crash loop nobody reads.  A job whose input is ``{"tide.preflight": true}`` is the
pre-flight: the import, then the decorator's ``preflight=`` input as a real call.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import time
import traceback
from typing import Any

PREFLIGHT_KEY = "tide.preflight"


def _paths() -> None:
    for var in ("TIDE_SDK_PATH", "TIDE_ENV_DIR", "TIDE_BUNDLE_DIR"):  # the bundle ends up first
        p = os.environ.get(var, "")
        if p and p not in sys.path:
            sys.path.insert(0, p)
    os.chdir(os.environ.get("TIDE_BUNDLE_DIR") or os.getcwd())


def _load(entry: str) -> tuple[Any, str]:
    """The entry's function, or None and the error (stage: traceback tail)."""
    module, _, name = entry.partition(":")
    try:
        obj = getattr(importlib.import_module(module), name)
    except BaseException:
        return None, "import " + module + " failed:\n" + _tail(traceback.format_exc())
    return getattr(obj, "__wrapped__", obj), ""


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _args(fn: Any, inp: Any) -> tuple[list[Any], dict[str, Any]]:
    """Input by parameter name when it binds (``{"text": "hi"}``), else the whole input as the
    only argument (``def handler(job_input)``)."""
    sig = inspect.signature(fn)
    if isinstance(inp, dict):
        try:
            sig.bind(**inp)
            return [], inp
        except TypeError:
            pass
    if len(sig.parameters) == 1:
        return [inp], {}
    raise TypeError(
        f"input {json.dumps(inp)[:200]} does not fit {fn.__name__}{sig}: send its arguments by name"
    )


def _preflight(fn: Any, error: str) -> dict[str, Any]:
    if error:
        return {"error": error}
    raw = os.environ.get("TIDE_PREFLIGHT", "")
    if not raw:
        return {"ok": True, "stage": "import"}
    t0 = time.monotonic()
    try:
        args, kwargs = _args(fn, json.loads(raw))
        out = fn(*args, **kwargs)
        if inspect.isgenerator(out):
            out = list(out)
        elif inspect.iscoroutine(out):
            import asyncio

            out = asyncio.run(out)
    except BaseException:
        return {"error": "pre-flight call failed:\n" + _tail(traceback.format_exc())}
    return {
        "ok": True,
        "stage": "call",
        "ms": round((time.monotonic() - t0) * 1000, 1),
        "output": repr(out)[:200],
    }


def _handler(fn: Any, error: str) -> Any:
    def is_preflight(job: dict[str, Any]) -> bool:
        inp = job.get("input")
        return isinstance(inp, dict) and inp.get(PREFLIGHT_KEY) is True

    if fn is not None and inspect.isgeneratorfunction(fn):

        def stream(job: dict[str, Any]) -> Any:
            if is_preflight(job):
                yield _preflight(fn, error)
                return
            args, kwargs = _args(fn, job["input"])
            yield from fn(*args, **kwargs)

        return stream

    if fn is not None and inspect.iscoroutinefunction(fn):

        async def run_async(job: dict[str, Any]) -> Any:
            if is_preflight(job):
                return _preflight(fn, error)
            args, kwargs = _args(fn, job["input"])
            return await fn(*args, **kwargs)

        return run_async

    def run(job: dict[str, Any]) -> Any:
        if is_preflight(job) or error:
            return _preflight(fn, error)
        args, kwargs = _args(fn, job["input"])
        return fn(*args, **kwargs)

    return run


def main() -> None:
    _paths()
    fn, error = _load(os.environ.get("TIDE_ENTRY", ""))
    if error:
        print(error, file=sys.stderr, flush=True)
    import runpod  # after the import above: its own start-up must not hide the user's error

    runpod.serverless.start({"handler": _handler(fn, error)})


if __name__ == "__main__":
    main()
