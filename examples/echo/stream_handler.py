"""An unmodified RunPod generator handler: streams one chunk per word."""

import asyncio

import runpod


async def handler(job):
    text = (
        str(job["input"].get("text", "hello from tide"))
        if isinstance(job["input"], dict)
        else str(job["input"])
    )
    for word in text.split():
        await asyncio.sleep(0.05)
        yield {"word": word}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
