"""A no-op handler for benchmarks: ``NOOP_CONCURRENCY`` jobs at a time (default 1)."""

import os

import runpod

CONCURRENCY = int(os.environ.get("NOOP_CONCURRENCY", "1"))


async def handler(job):
    return {"ok": True}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: CONCURRENCY})
