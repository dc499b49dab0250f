"""JSONL into shards: sizes, request ids, a bad line fails alone with its number."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from coordinator.batches import JsonlSplitter


async def _lines(raw: list[bytes]) -> AsyncIterator[bytes]:
    for line in raw:
        yield line


def _split(raw: list[bytes], size: int, max_line: int = 1 << 20) -> list[tuple[str, list[object]]]:
    async def run() -> list[tuple[str, list[object]]]:
        splitter = JsonlSplitter(size, max_line)
        return [(sid, list(lines)) async for sid, lines in splitter.shards(_lines(raw))]

    return asyncio.run(run())


@given(st.integers(0, 300), st.integers(1, 50))
def test_every_line_lands_in_exactly_one_shard_of_at_most_the_size(n: int, size: int) -> None:
    shards = _split([b'{"input": %d}' % i for i in range(n)], size)
    assert [len(s) for _, s in shards] == [min(size, n - i) for i in range(0, n, size)]
    values = [line.input for _, s in shards for line in s]  # type: ignore[attr-defined]
    assert values == list(range(n))
    ids = [line.id for _, s in shards for line in s]  # type: ignore[attr-defined]
    assert len(set(ids)) == n and all(i.startswith("req_") for i in ids)


def test_bad_lines_fail_alone_with_their_line_number_and_blank_lines_are_skipped() -> None:
    raw = [b'{"input": 1}', b"", b"{oops", b"[1, 2]", b'{"input": "x" }', b'{"input": "' + b"y" * 100 + b'"}']
    ((_, lines),) = _split(raw, 100, max_line=64)
    assert [line.error.split(":")[0] for line in lines] == ["", "line 3", "line 4", "", "line 6"]
    assert "not JSON" in lines[1].error and "'input'" in lines[2].error and "over 64" in lines[4].error
