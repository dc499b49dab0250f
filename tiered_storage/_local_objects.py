"""The local-directory backend: one file per object under a root directory.

Writes go to a temp file under ``<root>/.tmp`` (same file system), are fsynced,
then renamed into place, so a reader never sees part of an object.  ``if_absent``
links the temp file instead of renaming it: ``link(2)`` fails when the name
exists, so exactly one of concurrent writers wins.  Blocking file work runs in
threads.  Empty directories are left behind on delete (removing one races with a
concurrent put into it); they cost an inode each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO

from tide.api.errors import AlreadyExists, NotFound, Unavailable
from tiered_storage._objects import ObjectMeta, check_key, folder

__all__ = ["LocalObjectStore"]

_TMP = ".tmp"


class LocalObjectStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).absolute()
        (self._root / _TMP).mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return self._root.as_uri()

    def _path(self, key: str) -> Path:
        return self._root / check_key(key)

    def _meta(self, key: str, st: os.stat_result) -> ObjectMeta:
        return ObjectMeta(
            key=key, size=st.st_size, modified=st.st_mtime, etag=f"{st.st_ino:x}-{st.st_mtime_ns:x}"
        )

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> ObjectMeta:
        path = self._path(key)
        return await asyncio.to_thread(self._commit, key, path, lambda f: f.write(data), if_absent)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> ObjectMeta:
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(dir=self._root / _TMP)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    await asyncio.to_thread(f.write, chunk)
                await asyncio.to_thread(_sync, f)
            return await asyncio.to_thread(self._place, key, path, Path(tmp), False)
        finally:
            await asyncio.to_thread(Path(tmp).unlink, missing_ok=True)

    def _commit(
        self, key: str, path: Path, write: Callable[[IO[bytes]], object], if_absent: bool
    ) -> ObjectMeta:
        fd, tmp = tempfile.mkstemp(dir=self._root / _TMP)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                _sync(f)
            return self._place(key, path, Path(tmp), if_absent)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _place(self, key: str, path: Path, tmp: Path, if_absent: bool) -> ObjectMeta:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if if_absent:
                os.link(tmp, path)
            else:
                os.replace(tmp, path)
            return self._meta(key, path.stat())
        except FileExistsError:
            raise AlreadyExists(f"object {key} already exists in {self.url}") from None
        except (NotADirectoryError, IsADirectoryError):
            raise AlreadyExists(
                f"object key {key} collides with another key's folder in {self.url}"
            ) from None
        except OSError as exc:
            raise Unavailable(f"object store {self.url} cannot store {key}: {exc.strerror}") from None

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"object {key} not found in {self.url}") from None

    async def get_stream(self, key: str, *, chunk_size: int = 8 << 20) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"object {key} not found in {self.url}") from None
        with f:
            while chunk := await asyncio.to_thread(f.read, chunk_size):
                yield chunk

    async def head(self, key: str) -> ObjectMeta:
        path = self._path(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"object {key} not found in {self.url}") from None
        if not path.is_file():
            raise NotFound(f"object {key} not found in {self.url}")
        return self._meta(key, st)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            await asyncio.to_thread(path.unlink)

    async def list(self, prefix: str) -> AsyncIterator[ObjectMeta]:
        base = folder(prefix)
        found = await asyncio.to_thread(lambda: list(self._walk(base)))
        for meta in found:
            yield meta

    def _walk(self, base: str) -> Iterator[ObjectMeta]:
        top = self._root / base if base else self._root
        for dirpath, dirnames, filenames in os.walk(top):
            if Path(dirpath) == self._root:
                dirnames[:] = [d for d in dirnames if d != _TMP]
            rel = Path(dirpath).relative_to(self._root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    yield self._meta(key, (Path(dirpath) / name).stat())

    async def close(self) -> None:
        return None


def _sync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())
