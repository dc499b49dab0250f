"""A small OCI distribution client: resolve a reference, fetch manifests and stream blobs.

containerd 1.6 has no server-side pull (the Transfer service came in 1.7), so
noded pulls client side, as ctr and nerdctl do.  Auth follows the registry's
``WWW-Authenticate`` challenge: ``Basic`` with configured credentials, or
``Bearer`` through the token endpoint it names (with credentials when
configured, anonymously otherwise), or a configured static bearer token.
Plain HTTP only for hosts configured ``insecure`` and for loopback hosts
(127.0.0.0/8, ::1, localhost: the traffic never leaves the machine; Docker
treats 127.0.0.0/8 the same way).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, final

import aiohttp
import msgspec

from tide.api.errors import InvalidArgument, NotFound, TideError, Unauthenticated, Unavailable

__all__ = [
    "ImageRef",
    "RegistryAuth",
    "RegistryClient",
    "is_loopback",
    "parse_reference",
    "select_manifest",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
_DOCKER_HUB = "registry-1.docker.io"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_CHUNK = 1 << 20


class RegistryAuth(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach one registry host (e.g. "ghcr.io", "127.0.0.1:5000")."""

    username: str = ""
    password: str = ""
    token: str = ""  # a static bearer token; wins over username/password
    insecure: bool = False  # plain HTTP (a registry on loopback or a trusted LAN)


class ImageRef(msgspec.Struct, frozen=True, kw_only=True):
    host: str  # the registry host to talk to
    repo: str
    reference: str  # a tag or a digest

    @property
    def name(self) -> str:
        """The canonical name containerd's image store keeps it under."""
        host = "docker.io" if self.host == _DOCKER_HUB else self.host
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{host}/{self.repo}{sep}{self.reference}"


def parse_reference(ref: str) -> ImageRef:
    """Pure: "busybox" -> docker.io/library/busybox:latest; "host:5000/a/b:tag"; "a/b@sha256:..."."""
    if not ref or "://" in ref or ref != ref.strip():
        raise InvalidArgument(f"image {ref!r} is not an OCI reference (want [host/]repo[:tag][@digest])")
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = _DOCKER_HUB, name
    if host in ("docker.io", "index.docker.io"):
        host = _DOCKER_HUB
    tag = "latest"
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    if host == _DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path or not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", path):
        raise InvalidArgument(f"image {ref!r}: repository {path!r} is not valid")
    if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise InvalidArgument(f"image {ref!r}: digest {digest!r} is not valid")
    return ImageRef(host=host, repo=path, reference=digest or tag)


def is_loopback(host: str) -> bool:
    """Pure: does the registry host ("127.0.0.1:5000", "[::1]:5000", "localhost") name this machine?"""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def select_manifest(index: Mapping[str, Any], *, os: str, arch: str) -> dict[str, Any]:
    """Pure: the descriptor for os/arch in an image index (NotFound if it has none)."""
    for desc in index.get("manifests", []):
        plat = desc.get("platform") or {}
        if plat.get("os") == os and plat.get("architecture") == arch:
            return dict(desc)
    raise NotFound(f"the image index has no {os}/{arch} manifest")


@final
class RegistryClient:
    """Fetches manifests and blobs.  Concurrent calls are fine; tokens are cached per repo."""

    def __init__(self, session: aiohttp.ClientSession, auth: Mapping[str, RegistryAuth]) -> None:
        self._session = session
        self._auth = auth
        self._headers: dict[tuple[str, str], str] = {}  # (host, repo) -> Authorization

    def _url(self, ref: ImageRef, path: str) -> str:
        plain = self._auth.get(ref.host, RegistryAuth()).insecure or is_loopback(ref.host)
        scheme = "http" if plain else "https"
        return f"{scheme}://{ref.host}/v2/{ref.repo}/{path}"

    async def manifest(self, ref: ImageRef, reference: str) -> tuple[str, bytes]:
        """(media type, bytes) of a manifest or index, checked against its digest when pinned."""
        async with self._get(ref, f"manifests/{reference}", accept=_ACCEPT) as resp:
            body = await resp.read()
            media_type = resp.headers.get("Content-Type", "").split(";")[0]
        if reference.startswith("sha256:") and "sha256:" + hashlib.sha256(body).hexdigest() != reference:
            raise Unavailable(f"{ref.host}/{ref.repo}: manifest {reference} does not match its digest")
        if not media_type or media_type in ("application/json", "text/plain"):
            media_type = json.loads(body).get("mediaType", "")
        return media_type, body

    async def blob(self, ref: ImageRef, digest: str) -> AsyncIterator[bytes]:
        """Stream a blob in chunks (the caller checks the digest; containerd does on commit)."""
        async with self._get(ref, f"blobs/{digest}") as resp:
            async for chunk in resp.content.iter_chunked(_CHUNK):
                yield chunk

    def _get(self, ref: ImageRef, path: str, *, accept: str = "") -> _Request:
        return _Request(self, ref, self._url(ref, path), accept)

    async def _open(self, ref: ImageRef, url: str, accept: str) -> aiohttp.ClientResponse:
        for attempt in range(2):
            headers = {"Accept": accept} if accept else {}
            if (auth := self._headers.get((ref.host, ref.repo))) is not None:
                headers["Authorization"] = auth
            try:
                resp = await self._session.get(url, headers=headers)
            except aiohttp.ClientError as e:
                raise Unavailable(f"registry {ref.host} unreachable: {e}") from e
            if resp.status == 401 and attempt == 0:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                self._headers[(ref.host, ref.repo)] = await self._authorize(ref, challenge)
                continue
            if resp.status < 400:
                return resp
            text = (await resp.text())[:200]
            resp.release()
            raise _status_error(ref, url, resp.status, text)
        raise Unauthenticated(f"registry {ref.host} refused the credentials for {ref.repo}")

    async def _authorize(self, ref: ImageRef, challenge: str) -> str:
        cfg = self._auth.get(ref.host, RegistryAuth())
        if cfg.token:
            return f"Bearer {cfg.token}"
        basic = ""
        if cfg.username:
            basic = "Basic " + base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not basic:
                raise Unauthenticated(f"registry {ref.host} wants credentials; configure them for this host")
            return basic
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        if scheme != "bearer" or "realm" not in params:
            raise Unauthenticated(f"registry {ref.host}: unsupported auth challenge {challenge!r}")
        query = {"scope": params.get("scope", f"repository:{ref.repo}:pull")}
        if "service" in params:
            query["service"] = params["service"]
        try:
            headers = {"Authorization": basic} if basic else {}
            async with self._session.get(params["realm"], params=query, headers=headers) as resp:
                if resp.status >= 400:
                    raise Unauthenticated(f"token endpoint of {ref.host} answered {resp.status}")
                body = await resp.json(content_type=None)
        except aiohttp.ClientError as e:
            raise Unavailable(f"token endpoint of {ref.host} unreachable: {e}") from e
        token = body.get("token") or body.get("access_token")
        if not token:
            raise Unauthenticated(f"token endpoint of {ref.host} returned no token")
        return f"Bearer {token}"


class _Request:
    """``async with`` an authorized GET; raises taxonomy errors for HTTP failures."""

    def __init__(self, client: RegistryClient, ref: ImageRef, url: str, accept: str) -> None:
        self._client, self._ref, self._url, self._accept = client, ref, url, accept
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._resp = await self._client._open(self._ref, self._url, self._accept)
        return self._resp

    async def __aexit__(self, *exc: object) -> None:
        if self._resp is not None:
            self._resp.release()


def _status_error(ref: ImageRef, url: str, status: int, text: str) -> TideError:
    where = f"{ref.host}/{ref.repo}"
    if status == 404:
        return NotFound(f"image {where}:{ref.reference}: {url.rsplit('/v2/', 1)[-1]} not found")
    if status in (401, 403):
        return Unauthenticated(f"registry {ref.host} denied {where} ({status}): {text}")
    return Unavailable(f"registry {ref.host} answered {status} for {url}: {text}")
