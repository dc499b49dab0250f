"""The OpenAI mapping (coordinator/api/_openai.py): request checks, answers from job results
in every shape RunPod's vLLM worker produces, and SSE events; properties over any JSON."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.api._openai import OPENAI_PATH, answer_of, check_body, job_input, sse_events
from tide.api.errors import InvalidArgument

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_CHUNK = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "a"}}]}


def test_job_input_is_what_worker_vllm_reads() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert job_input("chat/completions", body) == {
        "openai_route": "/v1/chat/completions",
        "openai_input": body,
    }
    assert job_input("models", {}) == {"openai_route": "/v1/models", "openai_input": {}}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("chat/completions", []),
        ("chat/completions", {"messages": []}),
        ("chat/completions", {"messages": "hi"}),
        ("completions", {"prompt": 3}),
        ("embeddings", {}),
        ("embeddings", {"input": "x", "stream": True}),
        ("completions", {"prompt": "x", "stream": "yes"}),
        ("completions", {"prompt": "x", "model": 7}),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(route: str, body: Any) -> None:
    with pytest.raises(InvalidArgument):
        check_body(route, body)


def test_non_streamed_answers_from_every_output_shape() -> None:
    whole = {"object": "chat.completion", "choices": []}
    ok = {"id": "j", "status": "COMPLETED"}
    assert answer_of({**ok, "output": [whole]}, []) == (200, whole)  # return_aggregate_stream
    assert answer_of({**ok, "output": whole}, []) == (200, whole)  # a plain handler
    assert answer_of({**ok, "output": []}, [{"output": whole}]) == (200, whole)  # no aggregate
    flat = {"object": "error", "message": "bad", "type": "BadRequestError", "param": "n", "code": 400}
    status, body = answer_of({**ok, "output": [flat]}, [])
    assert status == 400 and body["error"]["param"] == "n"
    assert answer_of({**ok, "output": "text"}, [])[0] == 502


def test_failed_jobs_carry_the_workers_status_and_message() -> None:
    nested = (
        "{'message': 'The model `x` does not exist.', 'type': 'NotFoundError', 'param': None, 'code': 404}"
    )
    status, body = answer_of({"id": "j", "status": "FAILED", "error": nested}, [])
    assert status == 404 and "does not exist" in body["error"]["message"]
    raised = '{"error_type": "<class \'ValueError\'>", "error_message": "boom"}'
    status, body = answer_of({"id": "j", "status": "FAILED", "error": raised}, [])
    assert status == 500 and "boom" in body["error"]["message"]
    assert answer_of({"id": "j", "status": "TIMED_OUT"}, [])[0] == 504
    assert answer_of({"id": "j", "status": "CANCELLED"}, [])[0] == 410


def test_sse_events_pass_raw_text_and_frame_objects() -> None:
    assert sse_events("data: {}\n\ndata: [DONE]\n\n") == ([b"data: {}\n\ndata: [DONE]\n\n"], True)
    events, done = sse_events([_CHUNK, _CHUNK])
    assert len(events) == 2 and not done and events[0].startswith(b"data: {")
    events, done = sse_events({"error": {"message": "x", "code": 400}})
    assert done and b'"error"' in events[0]


def test_openai_paths_are_recognised() -> None:
    assert OPENAI_PATH.match("/v2/ep/openai/v1/chat/completions")
    assert not OPENAI_PATH.match("/v2/ep/run") and not OPENAI_PATH.match("/v2/ep/openaix")


@given(_json, st.lists(_json, max_size=3), st.sampled_from(["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"]))
def test_any_result_becomes_an_answer_or_an_openai_error(output: Any, chunks: list[Any], state: str) -> None:
    envelope = {
        "id": "j",
        "status": state,
        "output": output,
        "error": str(output) if state == "FAILED" else "",
    }
    status, body = answer_of(envelope, [{"output": c} for c in chunks])
    assert 200 <= status <= 599 and isinstance(body, dict)
    if status != 200:
        assert isinstance(body["error"]["message"], str)


@given(_json)
def test_any_yield_becomes_sse_events(value: Any) -> None:
    events, _ = sse_events(value)
    assert all(e.endswith(b"\n\n") for e in events)
