"""T2 reads: O_DIRECT into aligned buffers, buffered fallback, pipelined chunk callbacks."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import pytest

from flashboot._io import ChunkReader, open_for_read, write_file_atomic
from tide.api.errors import Internal, NotFound


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(5 * 4096 * 16)
    path = tmp_path / "blob.bin"
    write_file_atomic(str(path), [data])
    return path, data


def test_direct_read_is_bitwise_exact(blob: tuple[Path, bytes]) -> None:
    path, data = blob
    buf = mmap.mmap(-1, len(data) - 8192)
    landed: list[tuple[int, int]] = []
    with ChunkReader(str(path), threads=3) as reader, memoryview(buf) as view:
        result = reader.read_into(
            view, 8192, chunk_bytes=3 * 4096, on_chunk=lambda a, b: landed.append((a, b))
        )
        assert bytes(view) == data[8192:]
    assert result.direct and result.nbytes == len(data) - 8192
    assert sorted(landed)[0][0] == 0 and sum(b - a for a, b in landed) == len(data) - 8192


def test_open_falls_back_when_o_direct_is_refused(blob: tuple[Path, bytes]) -> None:
    path, data = blob

    def no_direct(p: str, flags: int) -> int:  # as overlayfs or an old tmpfs answers
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return os.open(p, flags)

    fd, direct = open_for_read(str(path), opener=no_direct)
    os.close(fd)
    assert not direct
    buf = mmap.mmap(-1, len(data))
    with ChunkReader(str(path), opener=no_direct) as reader, memoryview(buf) as view:
        result = reader.read_into(view, 0, chunk_bytes=4096 * 4)
        assert bytes(view) == data
    assert not result.direct


def test_read_falls_back_when_a_direct_read_is_refused(blob: tuple[Path, bytes]) -> None:
    path, data = blob
    buf = mmap.mmap(-1, len(data) + 4096)
    with ChunkReader(str(path)) as reader, memoryview(buf) as whole:
        view = whole[1 : 1 + len(data)]  # misaligned: the kernel answers EINVAL to O_DIRECT
        result = reader.read_into(view, 0, chunk_bytes=4096 * 8)
        assert bytes(view) == data
        view.release()
    assert not result.direct


def test_short_file_is_an_error(blob: tuple[Path, bytes]) -> None:
    path, data = blob
    buf = mmap.mmap(-1, len(data) + 4096)
    with ChunkReader(str(path)) as reader, memoryview(buf) as view, pytest.raises(Internal):
        reader.read_into(view, 0, chunk_bytes=4096 * 8)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        ChunkReader(str(tmp_path / "nope"))
