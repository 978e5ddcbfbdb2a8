"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``), for trio, built on httpx.

Only what the EtcdProposer needs: unary calls (range, txn, compaction, lease grant) and one
watch stream per request. Keys and values are bytes here and base64 on the wire; etcd's int64
fields arrive as strings and zero values are omitted, so readers use ``.get`` with defaults.

Fail-over: a request that could not be sent (connection refused, connect timeout) moves on to
the next endpoint and is retried there. A write that may have reached a server before the
connection broke raises :class:`OutcomeUnknown`: only the caller can tell whether it applied.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Final

import trio

from ._errors import EtcdError, StoreError, TransactionTooLarge

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    import httpx

MIN_VERSION: Final = (3, 4)
"""The oldest etcd whose JSON gateway serves ``/v3`` (3.3 had only ``/v3beta``)."""

# gRPC status codes etcd puts in the gateway's error bodies.
_OUT_OF_RANGE: Final = 11
_UNAVAILABLE: Final = 14
_DEADLINE_EXCEEDED: Final = 4
_TOO_LARGE: Final = ("too many operations in txn request", "request is too large")


class EtcdUnavailable(EtcdError):
    """No endpoint could be reached, or the cluster has no leader; safe to retry."""


class OutcomeUnknown(EtcdUnavailable):
    """A write may or may not have been applied: the connection failed after sending it."""


class Compacted(EtcdError):
    """The revision asked for was compacted away (``compact_revision`` is the oldest kept)."""

    def __init__(self, message: str, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


def b64(data: bytes) -> str:
    """Base64 text of ``data``, as the gateway wants keys and values."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Bytes of a base64 field of a gateway response."""
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` selecting every key that starts with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class EtcdClient:
    """Calls etcd's JSON gateway at ``endpoints`` (``http://host:port``), failing over."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0) -> None:
        import httpx  # the optional dependency: pip install "watchstore[etcd]"

        if not endpoints:
            raise ValueError("etcd needs at least one endpoint, e.g. ['http://127.0.0.1:2379']")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._httpx = httpx
        self._timeout = timeout
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits)
        # Watches are long requests: a client of their own, with no read timeout.
        self._watch_client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=None))

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now."""
        return self.endpoints[self._current]

    def fail_over(self) -> None:
        """Move on to the next endpoint."""
        self._current = (self._current + 1) % len(self.endpoints)

    async def aclose(self) -> None:
        """Close the connections."""
        with trio.CancelScope(shield=True):
            await self._client.aclose()
            await self._watch_client.aclose()

    async def check_version(self) -> str:
        """Return the server's version; EtcdError if it is older than 3.4."""
        for _ in range(len(self.endpoints)):
            try:
                response = await self._client.get(self.endpoint + "/version")
            except self._httpx.TransportError:
                self.fail_over()
                continue
            version = str(response.json().get("etcdserver", "0"))
            if _parse_version(version) < MIN_VERSION:
                raise EtcdError(
                    f"etcd {version} at {self.endpoint} is too old: watchstore needs etcd 3.4 "
                    "or newer (its JSON gateway serves /v3 from 3.4 on); upgrade the cluster"
                )
            return version
        raise EtcdUnavailable(f"no etcd endpoint answered: {', '.join(self.endpoints)}")

    @property
    def timeout(self) -> float:
        """Seconds a unary request may take."""
        return self._timeout

    async def ping(self) -> None:
        """Ask the current endpoint (only) for its revision; EtcdUnavailable if it fails."""
        body = {"key": b64(b"\0"), "count_only": True}
        try:
            response = await self._client.post(f"{self.endpoint}/v3/kv/range", json=body)
        except self._httpx.TransportError as exc:
            raise EtcdUnavailable(f"etcd at {self.endpoint} does not answer: {exc!r}") from exc
        if response.status_code != 200:
            raise EtcdUnavailable(f"etcd at {self.endpoint} answered {response.status_code}")

    async def call(self, method: str, body: dict[str, Any], *, write: bool = False) -> Any:
        """POST ``body`` to ``/v3/{method}`` and return the decoded response.

        A request that never reached a server is retried on the next endpoints (each once);
        after that EtcdUnavailable. With ``write``, a failure after sending raises
        OutcomeUnknown; a read is retried like an unsent request.
        """
        httpx = self._httpx
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"}
        last: BaseException | None = None
        for _ in range(len(self.endpoints)):
            url = f"{self.endpoint}/v3/{method}"
            try:
                response = await self._client.post(url, content=data, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = exc
                self.fail_over()
                continue
            except httpx.TransportError as exc:
                self.fail_over()
                if write:
                    raise OutcomeUnknown(f"etcd {method} at {url}: {exc!r}") from exc
                last = exc
                continue
            if response.status_code == 200:
                return response.json()
            error = _error_of(response)
            if isinstance(error, EtcdUnavailable):
                self.fail_over()
                if write:
                    raise OutcomeUnknown(str(error)) from None
                last = error
                continue
            raise error
        raise EtcdUnavailable(
            f"no etcd endpoint could serve {method} ({', '.join(self.endpoints)}): {last!r}"
        )

    async def watch(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Open one watch (``body`` is its ``create_request``) and yield each ``result``.

        Messages are split on newlines, not on HTTP chunks. Raises EtcdUnavailable when the
        stream cannot be opened or breaks, Compacted when its start revision is gone.
        """
        httpx = self._httpx
        url = f"{self.endpoint}/v3/watch"
        try:
            async with self._watch_client.stream(
                "POST", url, json={"create_request": body}
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error_of(response)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if "error" in message:
                        raise _error_from(message["error"], 500)
                    result: dict[str, Any] = message.get("result", {})
                    if "compact_revision" in result and result.get("canceled"):
                        raise Compacted(
                            f"watch start revision {body.get('start_revision')} was compacted",
                            int(result["compact_revision"]),
                        )
                    yield result
        except httpx.TransportError as exc:
            self.fail_over()
            raise EtcdUnavailable(f"etcd watch at {url} broke: {exc!r}") from exc
        self.fail_over()
        raise EtcdUnavailable(f"etcd watch at {url} ended")


def _error_of(response: httpx.Response) -> StoreError:
    try:
        data = response.json()
    except ValueError:
        data = {"message": response.text}
    return _error_from(data, response.status_code)


def _error_from(data: Any, status: int) -> StoreError:
    if not isinstance(data, dict):
        data = {"message": str(data)}
    message = str(data.get("message") or data.get("error") or data)
    code = data.get("grpc_code", data.get("code"))
    if any(text in message for text in _TOO_LARGE) or status == 429:
        return TransactionTooLarge(f"etcd refused the transaction: {message}")
    if code == _OUT_OF_RANGE or "compacted" in message:
        return Compacted(message)
    if (
        code in (_UNAVAILABLE, _DEADLINE_EXCEEDED)
        or status >= 500
        or "leader" in message
        or "timed out" in message
    ):
        return EtcdUnavailable(f"etcd is unavailable: {message}")
    return EtcdError(f"etcd answered HTTP {status}: {message}")
