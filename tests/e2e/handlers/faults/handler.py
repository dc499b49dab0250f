"""An unmodified RunPod handler for the fault suite: every execution appends the job id to
$TIDE_FAULT_LOG (a handler run twice shows up twice), then it sleeps ``input.sleep`` seconds."""

import os
import time

import runpod


def handler(job):
    with open(os.environ["TIDE_FAULT_LOG"], "a") as log:
        log.write(job["id"] + "\n")
    time.sleep(float(job["input"].get("sleep", 0)))
    return {"echo": job["input"]}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
