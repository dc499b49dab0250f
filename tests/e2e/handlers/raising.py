"""A handler that raises: the job must end FAILED with RunPod's error JSON string."""

import runpod


def handler(job):
    raise ValueError(f"boom: {job['input'].get('why', 'no reason')}")


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
