"""A streaming handler: yields ``n`` chunks; the final output aggregates them."""

import time

import runpod


def handler(job):
    n = int(job["input"].get("n", 3))
    delay = float(job["input"].get("delay", 0))
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield {"chunk": i}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
