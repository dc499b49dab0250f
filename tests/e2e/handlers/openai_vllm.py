"""A toy model served the way RunPod's vLLM worker serves OpenAI requests
(runpod-workers/worker-vllm ``OpenAIvLLMEngine``): the job input is
``{"openai_route": "/v1/...", "openai_input": <the OpenAI body>}``; an async generator
yields the whole OpenAI object, or with ``stream`` batches of chunks, as raw SSE text
(``RAW_OPENAI_OUTPUT=1``, vLLM's default, ``data: [DONE]`` included) or as lists of chunk
objects (``RAW_OPENAI_OUTPUT=0``).  The "model" echoes the prompt's words, one token each.

Errors as vLLM makes them: a bad request is an ``ErrorResponse`` yielded as output
(``{"object": "error", ...}``); an unknown model is yielded as ``{"error": {...}}``, which
the runpod SDK turns into a FAILED job.
"""

import asyncio
import os
import time

import runpod

MODEL = "tide/echo-1"
RAW = os.environ.get("RAW_OPENAI_OUTPUT", "1") not in ("0", "false")
BATCH = int(os.environ.get("DEFAULT_BATCH_SIZE", "2"))


def _tokens(route, body):
    if route == "/v1/chat/completions":
        text = str(body["messages"][-1].get("content", ""))
    else:
        prompt = body.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    words = text.split() or ["(empty)"]
    return words[: int(body.get("max_tokens") or 16)]


def _chunk(route, rid, tok, finish):
    base = {"id": rid, "created": int(time.time()), "model": MODEL}
    if route == "/v1/chat/completions":
        delta = {"content": tok} if tok is not None else {}
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**base, "object": "chat.completion.chunk", "choices": [choice]}
    choice = {"index": 0, "text": tok or "", "finish_reason": finish, "logprobs": None}
    return {**base, "object": "text_completion", "choices": [choice]}


def _whole(route, rid, toks, body):
    usage = {"prompt_tokens": len(toks), "completion_tokens": len(toks), "total_tokens": 2 * len(toks)}
    base = {"id": rid, "created": int(time.time()), "model": MODEL, "usage": usage}
    text = " ".join(toks)
    if route == "/v1/chat/completions":
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return {**base, "object": "chat.completion", "choices": [choice]}
    if route == "/v1/embeddings":
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(str(x))), 1.0, 0.0]}
            for i, x in enumerate(inputs)
        ]
        return {"object": "list", "data": data, "model": MODEL, "usage": usage}
    choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
    return {**base, "object": "text_completion", "choices": [choice]}


def _events(route, rid, toks):
    chunks = [_chunk(route, rid, t + " ", None) for t in toks] + [_chunk(route, rid, None, "stop")]
    if RAW:
        import json

        return [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return chunks


async def handler(job):
    route = job["input"].get("openai_route")
    body = job["input"].get("openai_input") or {}
    if route == "/v1/models":
        yield {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "tide"}]}
        return
    if route not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        yield {
            "object": "error",
            "message": "Invalid route",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        return
    if body.get("model") != MODEL:
        message = f"The model `{body.get('model')}` does not exist."
        yield {"error": {"message": message, "type": "NotFoundError", "param": "model", "code": 404}}
        return
    if (body.get("max_tokens") or 1) < 0:
        msg = "max_tokens must be at least 1"
        yield {
            "object": "error",
            "message": msg,
            "type": "BadRequestError",
            "param": "max_tokens",
            "code": 400,
        }
        return
    rid = f"cmpl-{job['id']}"
    toks = _tokens(route, body) if route != "/v1/embeddings" else []
    if not body.get("stream"):
        yield _whole(route, rid, toks, body)
        return
    events = _events(route, rid, toks)
    delay = float(body.get("toy_delay_s") or 0)  # the toy's own knob: a slow model
    for i in range(0, len(events), BATCH):
        if i and delay:
            await asyncio.sleep(delay)
        batch = events[i : i + BATCH]
        yield "".join(batch) if RAW else batch


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
