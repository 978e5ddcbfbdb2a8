"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``), on AnyIO (trio or asyncio).

Only what the EtcdProposer needs: unary calls (range, txn, delete) through httpx, and one
watch stream per request, read straight off its own connection (every commit of the store
comes back through the watch, so its cost per message counts). Keys and values are bytes
here and base64 on the wire; etcd's int64 fields arrive as strings and zero values are
omitted, so readers use ``.get`` with defaults.

Fail-over: a request that no member acted on moves on to the next endpoint and is sent again
there: it could not be sent (connection refused or reset before it went out), or the member
refused it before acting on it (not ready yet, catching up after a restart, a learner). So is
a read whatever went wrong: a member shutting down (etcd's gateway answers HTTP 408 "grpc: the
client connection is closing" during a graceful stop), a leader election, a timeout. After a
round of endpoints without an answer the client pauses, a little longer each round, and goes
round again, for up to ``timeout`` seconds: a cluster electing a leader, or members restarted
one by one, comes back within that. A write that a member may have acted on before failing
raises :class:`OutcomeUnknown` at once: only the caller can tell whether it applied.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
import anyio.abc

from ..core.errors import EtcdError, StoreError, TransactionTooLarge

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    import httpx

log = logging.getLogger("watchstore.etcd")

MIN_VERSION: Final = (3, 4)
"""The oldest etcd whose JSON gateway serves ``/v3`` (3.3 had only ``/v3beta``)."""

# gRPC status codes etcd puts in the gateway's error bodies.
_CANCELED: Final = 1
"""With HTTP 408 "grpc: the client connection is closing": the gateway's connection to its
own member is closing, as the member shuts down."""
_DEADLINE_EXCEEDED: Final = 4
_OUT_OF_RANGE: Final = 11
_UNAVAILABLE: Final = 14
_TOO_LARGE: Final = (
    "too many operations in txn request",
    "request is too large",
    "received message larger than max",  # gRPC's own limit, a little above etcd's
)
_REFUSED: Final = (
    "etcdserver: too many requests",  # applying lags committing (catching up after a restart)
    "etcdserver: not capable",  # the cluster version is not agreed yet (just started)
    "etcdserver: no leader",
    "etcdserver: rpc not supported for learner",
)
"""Answers etcd gives before it acts on a request (HTTP 429 or 503): the member is not ready
for it, another may be. Every other unavailable answer may come after a write was proposed
("request timed out", "server stopped", the gateway's connection closing)."""
_NO_SPACE: Final = "database space exceeded"
_FIRST_PAUSE: Final = 0.05
"""Seconds: the longest pause after the first round of endpoints that all failed; it doubles
each round, up to ``_LONGEST_PAUSE``."""
_LONGEST_PAUSE: Final = 1.0


class EtcdUnavailable(EtcdError):
    """No endpoint could be reached, or the cluster has no leader; safe to retry."""


class OutcomeUnknown(EtcdUnavailable):
    """A write may or may not have been applied: the connection failed after sending it, or
    the member failed while handling it."""


class Refused(EtcdUnavailable):
    """A member refused a request before acting on it (not ready, catching up, a learner):
    another member may serve it; a write was not applied."""


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
    """Calls etcd's JSON gateway at ``endpoints`` (``http://host:port`` or ``https://...``),
    failing over.

    ``https`` endpoints are verified with ``ssl_context``, which also carries the client
    certificate when etcd asks for one (``--client-cert-auth``); without it, with the
    system's trusted certificates. Every request and the watch use the same context.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        import httpx  # the optional dependency: pip install "watchstore[etcd]"

        if not endpoints:
            raise ValueError("etcd needs at least one endpoint, e.g. ['http://127.0.0.1:2379']")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        for endpoint in self.endpoints:
            _check_endpoint(endpoint)
        self._current = 0
        self._httpx = httpx
        self._timeout = timeout
        self._https = any(e.startswith("https:") for e in self.endpoints)
        self._ssl = ssl_context or (ssl.create_default_context() if self._https else None)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), limits=limits, verify=self._ssl or True
        )

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now."""
        return self.endpoints[self._current]

    def fail_over(self) -> None:
        """Move on to the next endpoint."""
        self._current = (self._current + 1) % len(self.endpoints)

    async def aclose(self) -> None:
        """Close the connections."""
        with anyio.CancelScope(shield=True):
            await self._client.aclose()

    async def check_version(self) -> str:
        """Return the server's version; EtcdError if it is older than 3.4."""
        errors = []
        for _ in range(len(self.endpoints)):
            try:
                response = await self._client.get(self.endpoint + "/version")
            except (self._httpx.TransportError, ssl.SSLError) as exc:  # TLS: see _describe
                errors.append(f"{self.endpoint}: {_describe(exc)}")
                self.fail_over()
                continue
            if response.status_code != 200:
                error = _error_of(response)
                if not isinstance(error, EtcdUnavailable):
                    raise error
                errors.append(f"{self.endpoint}: {error}")  # shutting down, not ready
                self.fail_over()
                continue
            version = str(response.json().get("etcdserver", "0"))
            if _parse_version(version) < MIN_VERSION:
                raise EtcdError(
                    f"etcd {version} at {self.endpoint} is too old: watchstore needs etcd 3.4 "
                    "or newer (its JSON gateway serves /v3 from 3.4 on); upgrade the cluster"
                )
            return version
        if self._https:
            hint = (
                "For TLS, give an ssl_context that trusts the cluster's CA and, if the cluster "
                "checks client certificates (--client-cert-auth), holds one."
            )
        else:
            hint = "If the cluster serves TLS, give https:// endpoints and an ssl_context."
        raise EtcdUnavailable(f"no etcd endpoint answered: {'; '.join(errors)}. {hint}")

    @property
    def timeout(self) -> float:
        """Seconds a unary request may take."""
        return self._timeout

    async def ping(self) -> None:
        """Ask the current endpoint (only) for its revision; EtcdUnavailable if it fails."""
        body = {"key": b64(b"\0"), "count_only": True}
        try:
            response = await self._client.post(f"{self.endpoint}/v3/kv/range", json=body)
        except (self._httpx.TransportError, ssl.SSLError) as exc:  # TLS: see _describe
            raise EtcdUnavailable(f"etcd at {self.endpoint} does not answer: {exc!r}") from exc
        if response.status_code != 200:
            raise EtcdUnavailable(f"etcd at {self.endpoint} answered {response.status_code}")

    async def call(self, method: str, body: dict[str, Any], *, write: bool = False) -> Any:
        """POST ``body`` to ``/v3/{method}`` and return the decoded response.

        A request no member acted on (never sent, or refused before the member acted on it)
        goes to the next endpoint, and so does a read whatever went wrong, round the
        endpoints (see ``_Rounds``) for up to ``timeout`` seconds; then EtcdUnavailable. With
        ``write``, a failure after a member may have acted on it raises OutcomeUnknown at
        once: the caller settles it (sending it again could apply it twice).
        """
        httpx = self._httpx
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"}
        rounds = _Rounds(self, method)
        while True:
            url = f"{self.endpoint}/v3/{method}"
            failure: BaseException
            try:
                response = await self._client.post(url, content=data, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure = exc  # never sent
            except (httpx.TransportError, ssl.SSLError) as exc:  # TLS: see _describe
                if write:
                    self.fail_over()
                    raise OutcomeUnknown(f"etcd {method} at {url}: {exc!r}") from exc
                failure = exc
            else:
                if response.status_code == 200:
                    return response.json()
                failure = _error_of(response)
                if not isinstance(failure, EtcdUnavailable):
                    raise failure
                if write and not isinstance(failure, Refused):
                    self.fail_over()
                    raise OutcomeUnknown(f"etcd {method} at {url}: {failure}") from failure
            await rounds.next(f"{url}: {_describe(failure)}")

    async def watch(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Open one watch (``body`` is its ``create_request``) and yield each ``result``.

        Raises EtcdUnavailable when the stream cannot be opened or breaks, Compacted when its
        start revision is gone. The stream is read straight off a socket (:class:`_Stream`),
        not through httpx: every commit of the store comes back through this stream, so its
        cost per message is paid once per commit.
        """
        url = f"{self.endpoint}/v3/watch"
        data = json.dumps({"create_request": body}, separators=(",", ":")).encode()
        try:
            with anyio.fail_after(self._timeout):
                stream = await _Stream.post(self.endpoint, "/v3/watch", data, self._ssl)
            async with stream:
                if stream.status != 200:
                    with anyio.fail_after(self._timeout):
                        text = await stream.read_all()
                    try:
                        error: Any = json.loads(text)
                    except ValueError:
                        error = {"message": text.decode(errors="replace")}
                    raise _error_from(error, stream.status)
                while (line := await stream.line()) is not None:
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
        # OSError covers a refused connection, a failed TLS handshake (ssl.SSLError) and the
        # timeouts above (TimeoutError).
        except (OSError, anyio.BrokenResourceError, _BadResponse) as exc:
            self.fail_over()
            raise EtcdUnavailable(f"etcd watch at {url} broke: {exc!r}") from exc
        self.fail_over()
        raise EtcdUnavailable(f"etcd watch at {url} ended")


class _Rounds:
    """Where a request goes after a failure that another member, or the same one a little
    later, may not have: the next endpoint at once; after a whole round of failures, a pause
    of a random time below a bound that starts at ``_FIRST_PAUSE`` and doubles each round (at
    most ``_LONGEST_PAUSE``; random, so that the clients of a cluster that comes back do not
    all come back at once), then round again. EtcdUnavailable, naming each failure of the
    last round, once the client's ``timeout`` has passed."""

    def __init__(self, client: EtcdClient, method: str) -> None:
        self._client = client
        self._method = method
        self._deadline = anyio.current_time() + client.timeout
        self._failures: list[str] = []
        self._rounds = 0

    async def next(self, failure: str) -> None:
        """Record ``failure`` of the current endpoint and move on (pausing after a round)."""
        client = self._client
        self._failures.append(failure)
        client.fail_over()
        log.info("etcd %s failed at %s; trying %s", self._method, failure, client.endpoint)
        if len(self._failures) < len(client.endpoints):
            return
        left = self._deadline - anyio.current_time()
        if left <= 0:
            raise EtcdUnavailable(
                f"no etcd endpoint could serve {self._method} for {client.timeout:g} s: "
                + "; ".join(self._failures)
            )
        self._failures = []
        bound = min(_FIRST_PAUSE * 2**self._rounds, _LONGEST_PAUSE)
        self._rounds += 1
        await anyio.sleep(min(random.uniform(0, bound), left))


class _BadResponse(Exception):
    """The server closed the connection early or sent something that is not HTTP/1.1."""


_RECEIVE: Final = 65536
_MAX_HEAD: Final = 65536


class _Stream:
    """One HTTP/1.1 POST on its own connection, its response body read line by line as it
    arrives (chunked, by length, or up to the end of the connection).

    Only for the watch: a long response of newline-delimited JSON messages. It does what the
    watch needs (``http``/``https`` URLs, no proxies, no redirects) and nothing more.
    """

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._raw = bytearray()  # received, not yet decoded
        self._body = bytearray()  # decoded body, not yet returned
        self.status = 0
        self._chunked = False
        self._left: int | None = None  # body bytes (identity) or chunk bytes still to come
        self._done = False

    @classmethod
    async def post(
        cls, endpoint: str, path: str, data: bytes, context: ssl.SSLContext | None = None
    ) -> _Stream:
        """Connect to ``endpoint``, send the POST and read the response's head (an https
        endpoint is verified with ``context``, by default the system's)."""
        url = _check_endpoint(endpoint)
        assert url.hostname is not None
        port = url.port or (443 if url.scheme == "https" else 80)
        stream: anyio.abc.ByteStream
        if url.scheme == "https":
            stream = await anyio.connect_tcp(
                url.hostname,
                port,
                ssl_context=context or ssl.create_default_context(),
                tls_hostname=url.hostname,
            )
        else:
            stream = await anyio.connect_tcp(url.hostname, port)
        try:
            head = (
                f"POST {url.path.rstrip('/')}{path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                "Content-Type: application/json\r\nConnection: close\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            )
            await stream.send(head.encode("ascii") + data)
            response = cls(stream)
            await response._read_head()
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
        return response

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await anyio.aclose_forcefully(self._stream)

    async def _receive(self) -> None:
        try:
            self._raw += await self._stream.receive(_RECEIVE)
        except anyio.EndOfStream:
            raise _BadResponse("the connection closed in the middle of the response") from None

    async def _read_head(self) -> None:
        raw = self._raw
        while (end := raw.find(b"\r\n\r\n")) < 0:
            if len(raw) > _MAX_HEAD:
                raise _BadResponse("the response head is too long")
            await self._receive()
        lines = raw[:end].decode("latin-1").split("\r\n")
        del raw[: end + 4]
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise _BadResponse(f"not an HTTP/1.x response: {lines[0]!r}")
        self.status = int(rest[:3])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "transfer-encoding":
                self._chunked = "chunked" in value.lower()
            elif name == "content-length":
                self._left = int(value.strip())
        if self._chunked:
            self._left = 0

    async def line(self) -> bytes | None:
        """The body's next line (without its newline); None at the end of the body."""
        body = self._body
        while True:
            end = body.find(b"\n")
            if end >= 0:
                line = bytes(body[:end])
                del body[: end + 1]
                return line
            if self._done:
                line = bytes(body)
                body.clear()
                return line or None
            await self._more()

    async def read_all(self) -> bytes:
        """The rest of the body."""
        while not self._done:
            await self._more()
        data = bytes(self._body)
        self._body.clear()
        return data

    async def _more(self) -> None:
        """Move the next received bytes of the body into ``_body`` (sets ``_done`` at its
        end)."""
        raw = self._raw
        if not self._chunked:
            if self._left is None:  # the body ends with the connection
                if not raw:
                    try:
                        raw += await self._stream.receive(_RECEIVE)
                    except anyio.EndOfStream:
                        self._done = True
                        return
                self._body += raw
                raw.clear()
                return
            if self._left and not raw:
                await self._receive()
            take = raw[: self._left]
            del raw[: len(take)]
            self._body += take
            self._left -= len(take)
            self._done = self._left == 0
            return
        assert self._left is not None
        if self._left == 0:  # at a chunk's size line
            while (end := raw.find(b"\r\n")) < 0:
                if len(raw) > _MAX_HEAD:
                    raise _BadResponse("a chunk size line is too long")
                await self._receive()
            try:
                size = int(raw[:end].split(b";")[0], 16)
            except ValueError:
                raise _BadResponse(f"bad chunk size {bytes(raw[:end])!r}") from None
            del raw[: end + 2]
            if size == 0:  # the last chunk (trailers, if any, are left unread)
                self._done = True
                return
            self._left = size + 2  # the chunk and the CRLF after it
        if not raw:
            await self._receive()
        take = raw[: self._left]
        del raw[: len(take)]
        self._left -= len(take)
        if self._left < 2:  # some of the CRLF ending the chunk is in ``take``
            take = take[: len(take) - (2 - self._left)]
        self._body += take


def _check_endpoint(endpoint: str) -> urllib.parse.SplitResult:
    """``endpoint`` split, or ValueError if it is not an http(s) URL with a host."""
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(
            f"not an http(s) etcd endpoint: {endpoint!r}; give URLs such as "
            "'http://127.0.0.1:2379' or 'https://etcd-1.example:2379'"
        )
    return url


# ssl.SSLError is caught beside httpx's TransportError: with TLS 1.3 a server that refuses the
# client's certificate says so after the handshake, on the first read, which httpx reports as
# a ReadError on trio but lets through as it is on asyncio (its AnyIO transport).
def _describe(error: BaseException) -> str:
    """An exception and the causes under it, for a message (httpx wraps the TLS error)."""
    parts: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 4:
        text = f"{type(seen).__name__}: {seen}" if str(seen) else type(seen).__name__
        if not parts or text not in parts[-1]:
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _error_of(response: httpx.Response) -> StoreError:
    try:
        data = response.json()
    except ValueError:
        data = {"message": response.text}
    return _error_from(data, response.status_code)


def _error_from(data: Any, status: int) -> StoreError:
    """The error of an answer other than 200: the gateway's body (``message``, ``code``: the
    gRPC status code) and the HTTP ``status``."""
    if not isinstance(data, dict):
        data = {"message": str(data)}
    message = str(data.get("message") or data.get("error") or data)
    code = data.get("grpc_code", data.get("code"))
    if any(text in message for text in _TOO_LARGE):
        return TransactionTooLarge(f"etcd refused the transaction: {message}")
    if _NO_SPACE in message:
        return EtcdError(
            f"etcd refuses writes: {message}. Its database reached its quota "
            "(--quota-backend-bytes): compact and defragment it, then disarm the NOSPACE alarm "
            "(etcdctl alarm disarm)"
        )
    if code == _OUT_OF_RANGE or "compacted" in message:
        return Compacted(message)
    if any(text in message for text in _REFUSED):
        return Refused(f"etcd member is not ready: {message}")
    if (
        code in (_CANCELED, _UNAVAILABLE, _DEADLINE_EXCEEDED)
        or status == 408
        or status >= 500
        or "leader" in message
        or "timed out" in message
    ):
        return EtcdUnavailable(f"etcd is unavailable: {message}")
    return EtcdError(f"etcd answered HTTP {status}: {message}")
