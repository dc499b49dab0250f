"""refresh_worker: every result carries stopPod and the worker exits after one job."""

import runpod


def handler(job):
    return {"done": job["input"]}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "refresh_worker": True})
