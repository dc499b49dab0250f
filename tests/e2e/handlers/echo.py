"""Echo: returns its input; ``sleep`` (s) first, ``big`` (n) returns n characters,
``progress`` sends a progress update and waits ``sleep`` before returning,
``fail_once`` (a file path) raises on the first attempt and succeeds after."""

import asyncio
import os

import runpod


async def handler(job):
    job_input = job["input"]
    if not isinstance(job_input, dict):
        return {"echo": job_input}
    marker = job_input.get("fail_once")
    if marker and not os.path.exists(marker):  # noqa: ASYNC240 - a test handler
        with open(marker, "w") as f:  # noqa: ASYNC230
            f.write("failed once")
        raise RuntimeError("first attempt fails")
    if job_input.get("progress"):
        runpod.serverless.progress_update(job, job_input["progress"])
    if job_input.get("sleep"):
        await asyncio.sleep(float(job_input["sleep"]))
    if job_input.get("big"):
        return {"big": "y" * int(job_input["big"]), "worker": job.get("id")}
    return {"echo": job_input}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
