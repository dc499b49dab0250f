"""Concurrent: ``concurrency_modifier`` -> $CONCURRENCY; each run appends its job id to $RUNS_FILE.
The first line of $RUNS_FILE says whether Tide's fast worker patched the SDK (``fast True``)."""

import asyncio
import os
import random

import runpod
from runpod.serverless.modules import rp_scale

RUNS = os.environ["RUNS_FILE"]
with open(RUNS, "a") as f:
    f.write(f"fast {getattr(rp_scale.JobScaler, '_tide_fast_worker', False)}\n")


async def handler(job):
    await asyncio.sleep(random.random() * float(job["input"].get("max_sleep", 0.01)))
    with open(RUNS, "a") as f:  # noqa: ASYNC230 - a test handler
        f.write(f"{job['id']}\n")
    return {"n": job["input"]["n"]}


if __name__ == "__main__":
    runpod.serverless.start(
        {"handler": handler, "concurrency_modifier": lambda _: int(os.environ["CONCURRENCY"])}
    )
