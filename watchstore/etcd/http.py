"""HTTP/1.1 for the etcd client: h11 (the sans-I/O HTTP/1.1 library) over AnyIO streams.

Unary calls go through a small pool of keep-alive connections per endpoint; a watch gets a
connection of its own, its response read message by message as it arrives. TLS through the
caller's ``ssl.SSLContext``. No proxies, no redirects, no cookies: what etcd's JSON gateway
needs and nothing more.

Failures come in two kinds, because a write's fate depends on which: :class:`NotSent` (the
request never reached the server: connecting or the TLS handshake failed) and
:class:`Broken` (the connection failed, timed out or spoke something that is not HTTP/1.1
after the request went out, so the server may have acted on it). A pooled connection that the
server closed while it sat idle is dropped before it is used, not reported.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Final, TypeVar, cast

import anyio
import anyio.abc
import h11

from .. import _runtime

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

T = TypeVar("T")

POOL_SIZE: Final = 16
"""Idle keep-alive connections kept per endpoint (more may be open while busy)."""
MAX_BODY: Final = 1 << 30
"""The largest response body read (a hostile or broken server cannot exhaust memory)."""
MAX_LINE: Final = 64 << 20
"""The longest message of a watch stream (etcd's default request limit is 1.5 MiB; a watch
response may carry many events)."""
_RECEIVE: Final = 65536
_HEADS: Final = 64
"""Request heads kept per endpoint (one per method and path the client uses, and token)."""


class HttpError(Exception):
    """A request failed; see :class:`NotSent` and :class:`Broken`."""


class NotSent(HttpError):
    """The request never reached the server (connection or TLS handshake failed)."""


class Broken(HttpError):
    """The connection failed after the request went out: the server may have acted on it."""


class Response:
    """A whole response: ``status`` and ``body``."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class Endpoint:
    """Connections to one ``http(s)://host:port[/base]`` endpoint."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None, timeout: float) -> None:
        split = check_url(url)
        assert split.hostname is not None
        self.url = url
        self.host = split.hostname
        self.port = split.port or (443 if split.scheme == "https" else 80)
        self.base = split.path.rstrip("/")
        self._authority = split.netloc.encode("ascii")
        self._tls = split.scheme == "https"
        self._context = ssl_context or (ssl.create_default_context() if self._tls else None)
        self._idle: list[_Connection] = []
        self._heads: dict[tuple[str, str, bool, tuple[tuple[str, str], ...]], h11.Request] = {}
        self.timeout = timeout
        """Seconds a request may take: to connect, then to send it and read the response
        (for a stream: its head)."""

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Send one request on a pooled connection and read the whole response."""
        connection = await self._pooled()
        if connection is None:
            connection = await self._connect()
        request = self._head(method, path, body, headers)
        status, data = await self._exchange(connection, request, body, _Connection.read_response)
        if connection.reusable() and len(self._idle) < POOL_SIZE:
            self._idle.append(connection)
        else:
            await connection.aclose()
        return Response(status, data)

    async def stream(
        self, path: str, body: bytes, *, headers: Sequence[tuple[str, str]] = ()
    ) -> Stream:
        """POST ``body`` on a connection of its own and return the response once its head
        has arrived; its body is read with :meth:`Stream.line`."""
        connection = await self._connect()
        request = self._head("POST", path, body, headers)
        status = await self._exchange(connection, request, body, _Connection.read_head)
        return Stream(connection, status)

    async def _exchange(
        self,
        connection: _Connection,
        request: h11.Request,
        body: bytes | None,
        read: Callable[[_Connection], Awaitable[T]],
    ) -> T:
        """Send ``request`` on ``connection`` and ``read`` the answer, within the timeout;
        on any failure the connection is closed (Broken if it failed, timed out or spoke
        something that is not HTTP/1.1). A request that overruns has its connection shut
        down by a timer, which wakes whatever waits on it (a cancel scope per request costs
        trio about 20 us more)."""
        timeout = self.timeout
        timer = connection.time_out_in(timeout)
        try:
            await connection.send(request, body)
            answer = await read(connection)
        except BaseException as exc:
            await connection.aclose()
            if isinstance(exc, (OSError, anyio.BrokenResourceError, h11.ProtocolError)):
                target = request.target.decode("ascii", "replace")
                cause = f"TimeoutError: no answer within {timeout:g} s"
                raise Broken(
                    f"{self.url}{target}: {cause if connection.timed_out else _named(exc)}"
                ) from exc
            raise
        finally:
            timer.cancel()
        return answer

    async def aclose(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.aclose()

    def _head(
        self, method: str, path: str, body: bytes | None, headers: Sequence[tuple[str, str]]
    ) -> h11.Request:
        """The request's head: made (and validated by h11) once per method, path, headers
        and whether there is a body, then reused. A body is sent chunked, so its length is
        not in the head."""
        key = (method, path, body is not None, tuple(headers))
        head = self._heads.get(key)
        if head is None:
            fields = [(b"host", self._authority)]
            if body is not None:
                fields.append((b"content-type", b"application/json"))
                fields.append((b"transfer-encoding", b"chunked"))
            fields.extend(
                (name.encode("ascii"), value.encode("latin-1")) for name, value in headers
            )
            target = (self.base + path).encode("ascii")
            head = h11.Request(method=method, target=target, headers=fields)
            if len(self._heads) < _HEADS:
                self._heads[key] = head
        return head

    async def _pooled(self) -> _Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.alive():
                return connection
            await connection.aclose()
        return None

    async def _connect(self) -> _Connection:
        """A new connection (TLS handshake done); NotSent if there is none within the
        timeout."""
        stream: anyio.abc.ByteStream
        try:
            with anyio.fail_after(self.timeout):
                if self._tls:
                    stream = await anyio.connect_tcp(
                        self.host, self.port, ssl_context=self._context, tls_hostname=self.host
                    )
                else:
                    stream = await anyio.connect_tcp(self.host, self.port)
        except (OSError, anyio.BrokenResourceError) as exc:  # TimeoutError is an OSError
            raise NotSent(f"{self.url}: cannot connect: {_named(exc)}") from exc
        return _Connection(stream, tls=self._tls)


class Stream:
    """A response whose body is read as it arrives, one newline-delimited message at a time
    (a watch). Close it with ``aclose``."""

    def __init__(self, connection: _Connection, status: int) -> None:
        self._connection = connection
        self.status = status
        self._buffer = bytearray()
        self._done = False

    async def line(self) -> bytes | None:
        """The body's next line (without its newline); None at the end of the body. Broken if
        the connection fails or a line exceeds ``MAX_LINE``."""
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                return line
            if self._done:
                line = bytes(buffer)
                buffer.clear()
                return line or None
            if len(buffer) > MAX_LINE:
                raise Broken(f"a message of the stream is longer than {MAX_LINE} bytes")
            await self._more()

    def buffered(self) -> bool:
        """True if ``line`` can return without waiting for the connection: a whole line, or
        the end of the body, has arrived (Broken if what arrived is not HTTP/1.1)."""
        if not self._done and b"\n" not in self._buffer:
            self._take_arrived()
        return self._done or b"\n" in self._buffer

    async def read_all(self) -> bytes:
        """The rest of the body (at most ``MAX_BODY`` bytes)."""
        while not self._done:
            if len(self._buffer) > MAX_BODY:
                raise Broken(f"the response body is longer than {MAX_BODY} bytes")
            await self._more()
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    async def _more(self) -> None:
        """Wait for more of the body; take all of it that has arrived."""
        try:
            data = await self._connection.body_data()
        except (OSError, anyio.BrokenResourceError, h11.ProtocolError) as exc:
            raise Broken(f"the stream broke: {_named(exc)}") from exc
        if data is None:
            self._done = True
            return
        self._buffer += data
        self._take_arrived()

    def _take_arrived(self) -> None:
        """Add the body that has arrived to the buffer, without waiting for more."""
        try:
            while data := self._connection.body_data_nowait():
                self._buffer += data
        except h11.ProtocolError as exc:
            raise Broken(f"the stream broke: {_named(exc)}") from exc
        if data is None:
            self._done = True

    async def aclose(self) -> None:
        """Close the connection."""
        await self._connection.aclose()


class _Connection:
    """One HTTP/1.1 connection: an AnyIO byte stream and h11's state machine."""

    __slots__ = (
        "_call_later",
        "_h11",
        "_plain",
        "_poll",
        "_socket",
        "_stream",
        "_wait_readable",
        "_wait_writable",
        "timed_out",
    )

    def __init__(self, stream: anyio.abc.ByteStream, *, tls: bool = False) -> None:
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_LINE)
        self._socket: socket.socket | None = stream.extra(
            anyio.abc.SocketAttribute.raw_socket, None
        )
        self._poll: select.poll | None = None
        runtime = _runtime.current()
        self._call_later = runtime.call_later
        self.timed_out = False
        """True once a request overran its time (see ``time_out_in``)."""
        # On trio, a plain TCP connection is read and written on its socket directly:
        # trio's socket calls each take an extra scheduling round when they succeed at
        # once (a unary request paid two), and the stream wrapper a guard and a context
        # manager. (asyncio's stream reads through a transport of its own: not there.)
        self._plain = self._socket if not tls and runtime.name == "trio" else None
        self._wait_readable = runtime.wait_readable
        self._wait_writable = runtime.wait_writable

    def time_out_in(self, seconds: float) -> _runtime.Timer:
        """A timer that ends this connection ``seconds`` from now unless cancelled first:
        it shuts the socket down, so a task waiting to send or receive on it wakes and
        fails, and sets ``timed_out``."""
        return self._call_later(seconds, self._time_out)

    def _time_out(self) -> None:
        self.timed_out = True
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):  # not connected any more: nothing waits
                sock.shutdown(socket.SHUT_RDWR)

    async def send(self, head: h11.Request, body: bytes | None) -> None:
        conn = self._h11
        data = conn.send(head) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        sock = self._plain
        if sock is None:
            await self._stream.send(data)
            return
        view = memoryview(data)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                await self._wait_writable(sock)
                continue
            view = view[sent:]

    async def _receive(self) -> bytes:
        """The next bytes that arrive (EndOfStream at the end)."""
        sock = self._plain
        if sock is None:
            return await self._stream.receive(_RECEIVE)
        while True:
            await self._wait_readable(sock)
            try:
                data = sock.recv(_RECEIVE)
            except BlockingIOError:
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def _event(self, *, receive: bool = False) -> h11.Event | type[h11.PAUSED]:
        """h11's next event, reading from the connection as it needs (at once, with
        ``receive``: the caller knows h11 holds nothing to make one of)."""
        conn = self._h11
        while True:
            if receive:
                receive = False
            else:
                event = conn.next_event()
                if event is not h11.NEED_DATA:  # (h11's events are ABCs: isinstance is slow)
                    return cast("h11.Event | type[h11.PAUSED]", event)
            try:  # h11.NEED_DATA
                data = await self._receive()
            except anyio.EndOfStream:
                if conn.their_state is h11.SEND_RESPONSE:  # not a byte of an answer came
                    raise h11.RemoteProtocolError(
                        "the server disconnected before it answered (is it TLS, or not HTTP?)"
                    ) from None
                data = b""
            conn.receive_data(data)

    async def read_head(self) -> int:
        """Read up to the response's head; its status (1xx answers are skipped)."""
        # Just after a request, h11 holds nothing to parse (no pipelining): read first.
        receive = self._h11.trailing_data == (b"", False)
        while True:
            event = await self._event(receive=receive)
            receive = False
            kind = type(event)
            if kind is h11.Response:
                return cast("h11.Response", event).status_code
            if kind is h11.InformationalResponse:
                continue
            raise h11.RemoteProtocolError(f"expected a response, got {event!r}")

    async def body_data(self) -> bytes | None:
        """The next piece of the body; None at its end."""
        return _piece(await self._event())

    def body_data_nowait(self) -> bytes | None:
        """The next piece of the body that has arrived already: empty if none has, None at
        the body's end."""
        event = self._h11.next_event()
        return b"" if event is h11.NEED_DATA else _piece(event)

    async def read_response(self) -> tuple[int, bytes]:
        status = await self.read_head()
        parts: list[bytes] = []
        size = 0
        while (data := await self.body_data()) is not None:
            size += len(data)
            if size > MAX_BODY:
                raise h11.RemoteProtocolError(f"the response body is longer than {MAX_BODY} bytes")
            parts.append(data)
        return status, b"".join(parts)

    def reusable(self) -> bool:
        """True if both sides finished this request cleanly and may go on: ready for the
        next one (h11 starts its next cycle)."""
        conn = self._h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE and not self.timed_out:
            conn.start_next_cycle()
            return True
        return False

    def alive(self) -> bool:
        """False if the server closed this idle connection (or sent something unasked)."""
        poller = self._poll
        if poller is None:
            sock = self._socket
            if sock is None:
                return True
            poller = self._poll = select.poll()
            poller.register(sock, select.POLLIN)
        return not poller.poll(0)

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self._stream)


def _piece(event: type[h11.NEED_DATA | h11.PAUSED] | h11.Event) -> bytes | None:
    """A piece of a response body from its event (None: the body's end)."""
    kind = type(event)  # (h11's events are ABCs: isinstance is slow)
    if kind is h11.Data:
        return bytes(cast("h11.Data", event).data)
    if kind is h11.EndOfMessage:
        return None
    if kind is h11.ConnectionClosed:
        raise h11.RemoteProtocolError("the connection closed in the middle of the body")
    raise h11.RemoteProtocolError(f"unexpected {event!r} in a response body")


def check_url(url: str) -> urllib.parse.SplitResult:
    """``url`` split, or ValueError if it is not an http(s) URL with a host."""
    split = urllib.parse.urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError(
            f"not an http(s) etcd endpoint: {url!r}; give URLs such as "
            "'http://127.0.0.1:2379' or 'https://etcd-1.example:2379'"
        )
    return split


def _named(error: BaseException) -> str:
    """``error`` in a message: its type and text (the client names its causes too)."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
