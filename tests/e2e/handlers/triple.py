"""Three jobs at once per worker (concurrency_modifier): each reports when it ran."""

import asyncio
import time

import runpod


async def handler(job):
    started = time.time()
    await asyncio.sleep(float(job["input"].get("sleep", 1.0)))
    return {"started": started, "finished": time.time()}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: 3})
