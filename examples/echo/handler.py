"""An unmodified RunPod handler: echoes its input, streams when asked, and
shows progress updates.  Runs the same on RunPod and on Tide."""

import asyncio

import runpod


async def handler(job):
    job_input = job["input"]
    if isinstance(job_input, dict) and job_input.get("fail"):
        raise ValueError(str(job_input["fail"]))
    if isinstance(job_input, dict) and job_input.get("sleep"):
        await asyncio.sleep(float(job_input["sleep"]))
    if isinstance(job_input, dict) and job_input.get("progress"):
        runpod.serverless.progress_update(job, "halfway")
    return {"echo": job_input}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
