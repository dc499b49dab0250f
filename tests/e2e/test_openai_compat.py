"""RunPod's OpenAI-compatible routes against ``tide dev``, driven by the official ``openai``
SDK (``base_url=<tide>/v2/<ep>/openai/v1``), with a worker written like RunPod's vLLM worker
(tests/e2e/handlers/openai_vllm.py): chat, completion, embeddings, models, streaming in both
of vLLM's stream formats, the worker's own errors and the platform's, all in OpenAI's shape.

One ``tide dev`` and two endpoints (raw SSE text and chunk lists) for the module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.cluster import DevClusterProcess
from tests.fixtures.coordinator import REPO_ROOT, http_json, wait_until

openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

HANDLERS = f"dir://{REPO_ROOT / 'tests' / 'e2e' / 'handlers'}"
MODEL = "tide/echo-1"


class Env:
    def __init__(self, proc: DevClusterProcess) -> None:
        self.proc = proc
        self.key = str(proc.admin.create_key(f"oai-{uuid.uuid4().hex[:6]}")["key"])
        self.clients: list[Any] = []
        self.raw = self._endpoint({})
        self.lists = self._endpoint({"RAW_OPENAI_OUTPUT": "0", "DEFAULT_BATCH_SIZE": "3"})

    def _endpoint(self, env: dict[str, str]) -> str:
        name = f"oai-{uuid.uuid4().hex[:8]}"
        body = {
            "name": name,
            "image": HANDLERS,
            "command": ["python", "-u", "openai_vllm.py"],
            "env": env,
            "workersMax": 1,
            "idleTimeout": 60,
        }
        self.proc.admin.call("POST", "/admin/v1/endpoints", body)
        return name

    def client(self, ep: str, key: str | None = None) -> Any:
        client = openai.OpenAI(
            base_url=f"{self.proc.url}/v2/{ep}/openai/v1", api_key=key or self.key, max_retries=0, timeout=60
        )
        self.clients.append(client)
        return client


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    proc = DevClusterProcess(gpus="2xH100-80GB")
    try:
        proc.start()
        made = Env(proc)
        yield made
        for client in made.clients:
            client.close()
    finally:
        proc.cleanup()


def test_chat_completion(env: Env) -> None:
    answer = env.client(env.raw).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello tide world"}]
    )
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == "hello tide world"
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    assert answer._request_id  # X-Request-Id: the job's id


def test_text_completion_and_embeddings_and_models(env: Env) -> None:
    client = env.client(env.raw)
    done = client.completions.create(model=MODEL, prompt="one two three four", max_tokens=2)
    assert done.choices[0].text == "one two"
    vectors = client.embeddings.create(model=MODEL, input=["ab", "abcd"])
    assert [d.embedding[0] for d in vectors.data] == [2.0, 4.0]
    assert [m.id for m in client.models.list()] == [MODEL]


@pytest.mark.parametrize("which", ["raw", "lists"])
def test_streaming_chat_in_both_worker_formats(env: Env, which: str) -> None:
    ep = env.raw if which == "raw" else env.lists
    stream = env.client(ep).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a b c d e"}], stream=True
    )
    chunks = list(stream)  # the SDK stops at data: [DONE]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "a b c d e "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streaming_completion(env: Env) -> None:
    stream = env.client(env.lists).completions.create(model=MODEL, prompt="x y z", stream=True)
    assert "".join(c.choices[0].text for c in stream) == "x y z "


def test_the_workers_errors_are_openai_errors(env: Env) -> None:
    client = env.client(env.raw)
    with pytest.raises(openai.NotFoundError) as missing:  # yielded {"error": {...}}: a FAILED job
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "does not exist" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:  # vLLM's flat ErrorResponse as output
        client.completions.create(model=MODEL, prompt="hi", max_tokens=-1)
    assert bad.value.body["param"] == "max_tokens"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):  # streaming: failed before the first chunk
        stream = client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        list(stream)


def test_the_platforms_errors_are_openai_errors(env: Env) -> None:
    with pytest.raises(openai.AuthenticationError) as unauth:
        env.client(env.raw, key="wrong").models.list()
    assert unauth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError):
        env.client("no-such-endpoint").models.list()
    with pytest.raises(openai.BadRequestError) as bad:
        env.client(env.raw).chat.completions.create(model=MODEL, messages=[])
    assert "messages" in bad.value.message
    url = f"{env.proc.url}/v2/{env.raw}/openai/v1"
    for method, path, body, status in [
        ("POST", "/chat/completions", [1, 2], 400),
        ("POST", "/embeddings", {"input": "x", "stream": True}, 400),
        ("POST", "/no-such-route", {}, 404),
        ("GET", "/chat/completions", None, 405),
    ]:
        code, answer = http_json(method, url + path, body, key=env.key)
        assert code == status, answer
        assert set(answer["error"]) == {"message", "type", "param", "code"}, answer


def test_a_streaming_client_that_leaves_cancels_its_job(env: Env) -> None:
    stream = env.client(env.raw).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "one two three four five six"}],
        stream=True,
        extra_body={"toy_delay_s": 1.0},
    )
    job = stream.response.headers["x-request-id"]
    next(iter(stream))
    stream.close()

    def cancelled() -> bool:
        code, st = http_json("GET", f"{env.proc.url}/v2/{env.raw}/status/{job}", key=env.key)
        return code == 200 and st["status"] == "CANCELLED"

    wait_until(cancelled, timeout=30, what=f"job {job} cancelled")
