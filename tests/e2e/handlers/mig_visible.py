"""Reports the devices this worker may see (what the runtime put in its environment)."""

import os

import runpod


def handler(job):
    return {
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "nvidia": os.environ.get("NVIDIA_VISIBLE_DEVICES", ""),
        "worker": os.environ.get("RUNPOD_POD_ID", ""),
    }


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
