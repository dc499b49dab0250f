"""The S3 backend, through obstore (Rust's ``object_store`` crate: SigV4 signing,
multipart uploads, retries, conditional puts; ARCHITECTURE.md says why this one).

One ``S3ObjectStore`` is one bucket and an optional key prefix.  Failures map
onto the taxonomy at this boundary: a missing object is NotFound, a lost
``if_absent`` race AlreadyExists, everything else (connection refused, timeouts,
5xx after retries, refused credentials) Unavailable with the store's URL and the
client's first line, never a credential.  Retries are few and short: a caller
(a /run with a large input) would rather get a 503 in seconds than hang.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import obstore
from obstore import exceptions as obx
from obstore.store import S3Store

from tide.api.errors import AlreadyExists, NotFound, Unavailable
from tiered_storage._objects import ObjectMeta, check_key, folder

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

__all__ = ["S3ObjectStore", "S3Settings"]

_PART = 8 << 20  # multipart part size: S3's minimum is 5 MiB


class S3Settings:
    """Where the bucket is and how to sign; secrets never come from the config file itself."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str = "",
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        request_timeout_s: float = 300.0,
        connect_timeout_s: float = 3.0,
        max_retries: int = 2,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries

    @property
    def url(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where


class S3ObjectStore:
    def __init__(self, settings: S3Settings) -> None:
        self._settings = settings
        config: S3Config = {"region": settings.region}
        if settings.endpoint_url:
            config["endpoint"] = settings.endpoint_url
            config["virtual_hosted_style_request"] = False  # path style: what self-hosted stores serve
        if settings.access_key_id:
            config["access_key_id"] = settings.access_key_id
            config["secret_access_key"] = settings.secret_access_key
        client: ClientConfig = {
            "allow_http": settings.endpoint_url.startswith("http://"),
            "timeout": timedelta(seconds=settings.request_timeout_s),
            "connect_timeout": timedelta(seconds=settings.connect_timeout_s),
        }
        retry: RetryConfig = {
            "max_retries": settings.max_retries,
            "retry_timeout": timedelta(seconds=10),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
        }
        self._store = S3Store(
            settings.bucket,
            prefix=settings.prefix or None,
            config=config,
            client_options=client,
            retry_config=retry,
        )

    @property
    def url(self) -> str:
        return self._settings.url

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> ObjectMeta:
        try:
            res = await obstore.put_async(
                self._store,
                check_key(key),
                data,
                mode="create" if if_absent else "overwrite",
                chunk_size=_PART,
            )
        except Exception as exc:
            self._raise(key, exc, writing=True)
        return ObjectMeta(key=key, size=len(data), modified=time.time(), etag=res["e_tag"] or "")

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> ObjectMeta:
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                yield chunk

        try:
            res = await obstore.put_async(
                self._store,
                check_key(key),
                counted(),
                use_multipart=True,
                chunk_size=_PART,
                max_concurrency=8,
            )
        except Exception as exc:
            self._raise(key, exc, writing=True)
        return ObjectMeta(key=key, size=size, modified=time.time(), etag=res["e_tag"] or "")

    async def get(self, key: str) -> bytes:
        try:
            got = await obstore.get_async(self._store, check_key(key))
            return bytes(await got.bytes_async())
        except Exception as exc:
            self._raise(key, exc)

    async def get_stream(self, key: str, *, chunk_size: int = 8 << 20) -> AsyncIterator[bytes]:
        try:
            got = await obstore.get_async(self._store, check_key(key))
            async for chunk in got.stream(min_chunk_size=chunk_size):
                yield bytes(chunk)
        except Exception as exc:
            self._raise(key, exc)

    async def head(self, key: str) -> ObjectMeta:
        try:
            meta = await obstore.head_async(self._store, check_key(key))
        except Exception as exc:
            self._raise(key, exc)
        return _meta(meta)

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, check_key(key))
        except (obx.NotFoundError, FileNotFoundError):
            return
        except Exception as exc:
            self._raise(key, exc)

    async def list(self, prefix: str) -> AsyncIterator[ObjectMeta]:
        base = folder(prefix)
        try:
            async for batch in obstore.list(self._store, prefix=base or None, chunk_size=1000):
                for meta in batch:
                    yield _meta(meta)
        except Exception as exc:
            self._raise(base, exc)

    async def close(self) -> None:
        return None

    def _raise(self, key: str, exc: Exception, *, writing: bool = False) -> NoReturn:
        if isinstance(exc, obx.NotFoundError | FileNotFoundError):  # obstore raises the builtin
            if writing:  # a 404 to a PUT: the bucket is missing
                raise Unavailable(f"object store {self.url}: no such bucket ({_first_line(exc)})") from None
            raise NotFound(f"object {key} not found in {self.url}") from None
        if isinstance(exc, (obx.AlreadyExistsError, obx.PreconditionError)):
            raise AlreadyExists(f"object {key} already exists in {self.url}") from None
        if isinstance(exc, (obx.PermissionDeniedError, obx.UnauthenticatedError)):
            raise Unavailable(
                f"object store {self.url} refused our credentials ({_first_line(exc)})"
            ) from None
        if isinstance(exc, obx.BaseError | OSError | TimeoutError):
            raise Unavailable(f"object store {self.url} is unavailable: {_first_line(exc)}") from None
        raise exc


def _meta(meta: Any) -> ObjectMeta:
    return ObjectMeta(
        key=meta["path"],
        size=meta["size"],
        modified=meta["last_modified"].timestamp(),
        etag=meta.get("e_tag") or "",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
