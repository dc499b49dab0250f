"""A small synchronous client of the coordinator's admin API (stdlib only).

Every call is one HTTP request with the admin key as a bearer token.  Errors
come back as ``CliError``: the server's ``{"error": ...}`` message with a hint
chosen from the status, or a network failure with a hint about what to check.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from typing import TYPE_CHECKING, Any

from tide.cli._errors import CliError

if TYPE_CHECKING:
    import urllib.error

__all__ = ["AdminClient", "route_missing"]

_HINTS = {
    401: "pass an admin key with --api-key, set TIDE_API_KEY, or put it in ~/.config/tide/admin.key",
    403: "this key is not an admin key; use the cluster's admin key or one made with "
    "'tide keys create NAME --scope admin'",
    404: "check the name; the list commands ('tide endpoint list', 'tide keys list') show what exists",
    409: "it exists already or changed meanwhile; read it again and retry",
    429: "the coordinator is busy; retry in a moment",
    503: "the coordinator is not ready (its store may be down); retry in a moment",
}


def route_missing(err: CliError) -> bool:
    """True when a 404 means "no such route" rather than "no such object"."""
    if err.status != 404:
        return False
    text = err.message.lower()
    # ours: "no such route: GET /x"; a bare aiohttp or proxy: "404: Not Found"
    return text.startswith("no such route") or ("not found" in text and len(text) < 40 and "'" not in text)


class AdminClient:
    """``get``/``post``/``patch``/``delete`` return the decoded JSON body.

    Not thread-safe to share across threads (nothing here needs that); every
    call opens its own connection; ``timeout`` bounds each request.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout

    def get(self, path: str, **query: object) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: object = None) -> Any:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: object) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def put_bytes(self, path: str, data: bytes, content_type: str) -> Any:
        return self.request("PUT", path, raw=data, content_type=content_type)

    def upload(self, path: str, data: Any, content_type: str, **query: object) -> Any:
        """POST a raw body (bytes or a binary file, streamed) and decode the JSON answer."""
        return self.request("POST", path, query=query, raw=data, content_type=content_type)

    def download(self, path: str, out: Any) -> None:
        """GET ``path`` and copy the body to the binary file ``out`` as it arrives."""
        import shutil
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.base_url + path, method="GET")
        if self._api_key:
            req.add_header("Authorization", f"Bearer {self._api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                shutil.copyfileobj(resp, out, 1 << 20)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._network_error(exc) from None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: dict[str, object] | None = None,
        raw: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        import urllib.error  # lazy: http.client and email cost ~20 ms that --help does not need
        import urllib.request

        url = self.base_url + path
        params = {k: str(v) for k, v in (query or {}).items() if v is not None and v != ""}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self._api_key:
            req.add_header("Authorization", f"Bearer {self._api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                answer = resp.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._network_error(exc) from None
        return json.loads(answer) if answer.strip() else {}

    def _network_error(self, exc: OSError) -> CliError:
        import urllib.error

        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ConnectionRefusedError):
            return CliError(
                f"cannot connect to the coordinator at {self.base_url}: connection refused",
                hint="is the coordinator running? start one with `tide dev`, or point --url / TIDE_URL at it",
            )
        if isinstance(reason, socket.timeout | TimeoutError):
            return CliError(
                f"the coordinator at {self.base_url} did not answer within {self._timeout:g} s",
                hint="check that --url points at a coordinator and that it is not overloaded",
            )
        if isinstance(reason, socket.gaierror):
            return CliError(f"cannot resolve the host in {self.base_url}", hint="check --url / TIDE_URL")
        message = f"cannot reach the coordinator at {self.base_url}: {reason}"
        return CliError(message, hint="check --url / TIDE_URL")


def _http_error(exc: urllib.error.HTTPError) -> CliError:
    raw = exc.read()
    exc.close()
    message = ""
    try:
        decoded = json.loads(raw)
        if isinstance(decoded, dict):
            message = str(decoded.get("error", ""))
    except ValueError:
        message = raw.decode(errors="replace").strip()[:300]
    status = exc.code
    hint = _HINTS.get(status, "")
    if status in (404, 409) and "'tide " in message:
        hint = ""  # the server's message already says what to run next
    if status >= 500:
        hint = "the coordinator failed; its log has the details"
    return CliError(message or f"HTTP {status} {exc.reason}", hint=hint, status=status)
