"""Sends a progress update, then holds until the file named by ``release`` exists."""

import asyncio
import os

import runpod


async def handler(job):
    job_input = job["input"]
    runpod.serverless.progress_update(job, job_input.get("progress", "halfway"))
    release = job_input.get("release", "")
    for _ in range(400):
        if release and os.path.exists(release):  # noqa: ASYNC240 - a test handler
            break
        await asyncio.sleep(0.05)
    return {"final": True}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
