"""Reports the GPUs this worker may see (CUDA_VISIBLE_DEVICES), after ``sleep`` seconds."""

import os
import time

import runpod


def handler(job):
    time.sleep(float(job["input"].get("sleep", 0)))
    print(f"visible devices: {os.environ['CUDA_VISIBLE_DEVICES']}", flush=True)
    return {"cuda": os.environ["CUDA_VISIBLE_DEVICES"], "pod": os.environ.get("RUNPOD_POD_ID", "")}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
