"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``), on AnyIO (trio or asyncio).

Only what the EtcdProposer needs: unary calls (range, txn, delete) on a small pool of
keep-alive connections per endpoint, and one watch stream per request on a connection of its
own, both HTTP/1.1 through h11 (``http.py``; every commit costs a txn and comes back through
the watch, so the client's cost per request counts). Keys and values are bytes
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
import logging
import random
import ssl
import time
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec

from ..core.errors import (
    EtcdAuthFailed,
    EtcdError,
    EtcdPermissionDenied,
    StoreError,
    TransactionTooLarge,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

    from . import http

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
        user: str | None = None,
        password: str | None = None,
        scope: str = "",
    ) -> None:
        from . import http  # h11, the optional dependency: pip install "watchstore[etcd]"

        if not endpoints:
            raise ValueError("etcd needs at least one endpoint, e.g. ['http://127.0.0.1:2379']")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        for endpoint in self.endpoints:
            http.check_url(endpoint)
        self._current = 0
        self._http = http
        self._timeout = timeout
        self._https = any(e.startswith("https:") for e in self.endpoints)
        self._ssl = ssl_context or (ssl.create_default_context() if self._https else None)
        self._connections = [http.Endpoint(e, self._ssl, timeout) for e in self.endpoints]
        if (user is None) != (password is None):
            raise ValueError("etcd authentication takes both user= and password=")
        self._user = user
        self._password = password
        self._tokens: dict[int, str] = {}  # by endpoint: etcd's simple tokens are per member
        self._scope = scope
        self.requests = 0
        """Unary requests sent (every attempt; ``store.statistics().etcd_requests``)."""
        self.retries = 0
        """Requests sent again after a member did not serve them (``etcd_retries``)."""

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
            for endpoint in self._connections:
                await endpoint.aclose()

    async def send(self, method: str, path: str, body: bytes | None) -> http.Response:
        """One request to the current endpoint (``path`` from its root: ``/v3/kv/range``);
        raises ``http.NotSent`` or ``http.Broken``. Every unary request goes through here;
        with a user, it carries the user's token (authenticating first, and again once if
        the member no longer knows the token)."""
        endpoint = self._current
        connection = self._connections[endpoint]
        self.requests += 1
        if self._user is None:
            return await connection.request(method, path, body)
        for attempt in range(2):
            headers = await self._auth_headers(endpoint)
            response = await connection.request(method, path, body, headers=headers)
            if response.status == 200 or attempt or not _token_refused(response):
                return response
            self._tokens.pop(endpoint, None)
        raise AssertionError("not reached")  # pragma: no cover

    async def _auth_headers(self, endpoint: int) -> tuple[tuple[str, str], ...]:
        """The ``Authorization`` header of the user's token at ``endpoint``."""
        token = self._tokens.get(endpoint)
        if token is None:
            body = _ENCODE({"name": self._user, "password": self._password})
            connection = self._connections[endpoint]
            try:
                response = await connection.request("POST", "/v3/auth/authenticate", body)
            except self._http.Broken as exc:  # the request it was for was not sent
                raise self._http.NotSent(f"authenticating failed: {exc}") from exc
            answer = _json_or_text(response.body)
            if not isinstance(answer, dict):
                answer = {"message": str(answer)}
            if response.status != 200 or not isinstance(answer.get("token"), str):
                message = str(answer.get("message") or answer.get("error") or answer)
                if "authentication failed" in message or "not enabled" in message:
                    raise EtcdAuthFailed(
                        f"etcd at {connection.url} refused user {self._user!r}: {message}. "
                        "Check the user name and password (etcdctl user get NAME), and that "
                        "auth is enabled on the cluster (etcdctl auth enable)"
                    )
                raise _error_from(answer, response.status)
            token = self._tokens[endpoint] = answer["token"]
        return (("authorization", token),)

    async def check_version(self) -> str:
        """Return the server's version; EtcdError if it is older than 3.4."""
        errors = []
        for attempt in range(len(self.endpoints)):
            self.retries += attempt > 0  # the next member, after one that did not answer
            try:
                response = await self.send("GET", "/version", None)
            except self._http.HttpError as exc:
                errors.append(f"{self.endpoint}: {_describe(exc)}")
                self.fail_over()
                continue
            if response.status != 200:
                error = _error_of(response)
                if not isinstance(error, EtcdUnavailable):
                    raise error
                errors.append(f"{self.endpoint}: {error}")  # shutting down, not ready
                self.fail_over()
                continue
            answer = _json(response.body)
            version = str(answer.get("etcdserver", "0") if isinstance(answer, dict) else "0")
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
        body = _ENCODE({"key": b64(b"\0"), "count_only": True})
        try:
            response = await self.send("POST", "/v3/kv/range", body)
        except self._http.HttpError as exc:
            raise EtcdUnavailable(f"etcd at {self.endpoint} does not answer: {exc}") from exc
        if response.status != 200:
            raise EtcdUnavailable(f"etcd at {self.endpoint} answered {response.status}")

    async def call(self, method: str, body: dict[str, Any], *, write: bool = False) -> Any:
        """POST ``body`` to ``/v3/{method}`` and return the decoded response.

        A request no member acted on (never sent, or refused before the member acted on it)
        goes to the next endpoint, and so does a read whatever went wrong, round the
        endpoints (see ``_Rounds``) for up to ``timeout`` seconds; then EtcdUnavailable. With
        ``write``, a failure after a member may have acted on it raises OutcomeUnknown at
        once: the caller settles it (sending it again could apply it twice).
        """
        http = self._http
        data = _ENCODE(body)
        path = f"/v3/{method}"
        started = time.monotonic()
        rounds: _Rounds | None = None  # made at the first failure (most calls have none)
        while True:
            failure: BaseException
            try:
                response = await self.send("POST", path, data)
            except http.NotSent as exc:
                failure = exc
            except http.Broken as exc:
                if write:
                    url = f"{self.endpoint}{path}"
                    self.fail_over()
                    raise OutcomeUnknown(f"etcd {method} at {url}: {exc}") from exc
                failure = exc
            else:
                if response.status == 200:
                    return _json(response.body)
                failure = _error_of(response)
                if isinstance(failure, EtcdPermissionDenied):
                    raise EtcdPermissionDenied(
                        f"etcd user {self._user!r} may not {method} under {self._scope!r}: "
                        f"{failure}. Give the user a role with readwrite permission on the "
                        f"prefix (etcdctl role grant-permission ROLE readwrite "
                        f"--prefix=true {self._scope!r})"
                    )
                if not isinstance(failure, EtcdUnavailable):
                    raise failure
                if write and not isinstance(failure, Refused):
                    url = f"{self.endpoint}{path}"
                    self.fail_over()
                    raise OutcomeUnknown(f"etcd {method} at {url}: {failure}") from failure
            if rounds is None:
                rounds = _Rounds(self, method, started)
            await rounds.next(f"{self.endpoint}{path}: {_describe(failure)}")
            self.retries += 1

    async def watch(
        self,
        body: dict[str, Any],
        *,
        between: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Open one watch (``body`` is its ``create_request``) and yield each ``result``.

        Raises EtcdUnavailable when the stream cannot be opened or breaks, Compacted when its
        start revision is gone. Each message is decoded as it arrives: every commit of the
        store comes back through this stream. ``between``, if given, is awaited whenever
        every message that has arrived was yielded, before waiting for the next.
        """
        url = f"{self.endpoint}/v3/watch"
        data = _ENCODE({"create_request": body})
        http = self._http
        try:
            headers = () if self._user is None else await self._auth_headers(self._current)
            stream = await self._connections[self._current].stream(
                "/v3/watch", data, headers=headers
            )
            try:
                if stream.status != 200:
                    with anyio.fail_after(self._timeout):
                        text = await stream.read_all()
                    raise _error_from(_json_or_text(text), stream.status)
                while True:
                    if between is not None and not stream.buffered():
                        await between()
                    line = await stream.line()
                    if line is None:
                        break
                    if not line.strip():
                        continue
                    message = _json(line)
                    if not isinstance(message, dict):
                        raise http.Broken(f"a watch message is not an object: {line[:80]!r}")
                    if "error" in message:
                        raise _error_from(message["error"], 500)
                    result: dict[str, Any] = message.get("result", {})
                    if "compact_revision" in result and result.get("canceled"):
                        raise Compacted(
                            f"watch start revision {body.get('start_revision')} was compacted",
                            int(result["compact_revision"]),
                        )
                    yield result
            finally:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
        # TimeoutError: the body of a refusal did not come (read_all above).
        except (http.HttpError, TimeoutError) as exc:
            self.fail_over()
            raise EtcdUnavailable(f"etcd watch at {url} broke: {_describe(exc)}") from exc
        self.fail_over()
        raise EtcdUnavailable(f"etcd watch at {url} ended")


class _Rounds:
    """Where a request goes after a failure that another member, or the same one a little
    later, may not have: the next endpoint at once; after a whole round of failures, a pause
    of a random time below a bound that starts at ``_FIRST_PAUSE`` and doubles each round (at
    most ``_LONGEST_PAUSE``; random, so that the clients of a cluster that comes back do not
    all come back at once), then round again. EtcdUnavailable, naming each failure of the
    last round, once the client's ``timeout`` has passed."""

    def __init__(self, client: EtcdClient, method: str, started: float) -> None:
        """``started``: when the call began, in ``time.monotonic()`` seconds."""
        self._client = client
        self._method = method
        self._deadline = started + client.timeout
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
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise EtcdUnavailable(
                f"no etcd endpoint could serve {self._method} for {client.timeout:g} s: "
                + "; ".join(self._failures)
            )
        self._failures = []
        bound = min(_FIRST_PAUSE * 2**self._rounds, _LONGEST_PAUSE)
        self._rounds += 1
        await anyio.sleep(min(random.uniform(0, bound), left))


_ENCODE: Final = msgspec.json.encode
_DECODE: Final = msgspec.json.decode


def _json(data: bytes) -> Any:
    """A JSON body or message, decoded; EtcdError if it is not JSON."""
    try:
        return _DECODE(data)
    except msgspec.DecodeError as exc:
        raise EtcdError(f"etcd answered something that is not JSON: {data[:80]!r}") from exc


def _json_or_text(data: bytes) -> Any:
    """A JSON error body, or its text as the message."""
    try:
        return _DECODE(data)
    except msgspec.DecodeError:
        return {"message": data.decode(errors="replace")}


def _token_refused(response: http.Response) -> bool:
    """True if a member refused a request's auth token (expired, or issued by another)."""
    return b"invalid auth token" in response.body or b"user name is empty" in response.body


def _describe(error: BaseException) -> str:
    """An exception and the causes under it, for a message (a broken stream wraps a TLS error)."""
    parts: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 4:
        text = f"{type(seen).__name__}: {seen}" if str(seen) else type(seen).__name__
        if not parts or text not in parts[-1]:
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _error_of(response: http.Response) -> StoreError:
    return _error_from(_json_or_text(response.body), response.status)


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
    if "permission denied" in message:
        return EtcdPermissionDenied(message)
    if "user name is empty" in message:  # auth is on, and the request carried no token
        return EtcdAuthFailed(
            f"etcd requires authentication ({message}): give EtcdProposer(..., user=..., "
            "password=...), or user= and password= to the client"
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
