"""An async handler that sleeps ``sleep`` seconds and writes ``cancelled`` to the
file named by ``marker`` when the platform stops it (job-stop -> task.cancel())."""

import asyncio
from pathlib import Path

import runpod


async def handler(job):
    job_input = job["input"]
    marker = job_input.get("marker")
    try:
        await asyncio.sleep(float(job_input.get("sleep", 30)))
    except asyncio.CancelledError:
        if marker:
            Path(marker).write_text(f"cancelled {job['id']}")  # noqa: ASYNC240
        raise
    return {"slept": job_input.get("sleep", 30)}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
