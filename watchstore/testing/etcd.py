"""A throw-away etcd member for tests: loopback, free ports, data in a given directory.

``EtcdMember.start(directory)`` runs the ``etcd`` found on PATH (Debian and Ubuntu package
it as ``etcd-server``) as one member of a new cluster and returns once it serves clients:
it watches the member's own log for the line saying so (written by etcd 3.4 to 3.6, in
either of its log formats), not by polling; ``stop()`` ends it. The member's output goes
to ``etcd.log`` in the directory.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
from typing import IO, TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

READY: Final = (
    b"serving client traffic",  # zap logger (3.4 with --logger=zap, 3.5, 3.6)
    b"serving insecure client requests",  # capnslog (3.3, 3.4)
    b"ready to serve client requests",
)
"""What etcd logs once it serves clients (after its server reported ready)."""

_prefixes = itertools.count()


def etcd_binary() -> str | None:
    """The ``etcd`` executable on PATH, or None when etcd is not installed."""
    return shutil.which("etcd")


class EtcdMember:
    """One etcd member on loopback; ``endpoint`` is its client URL."""

    def __init__(self, process: subprocess.Popen[bytes], endpoint: str, log: Path) -> None:
        self.process = process
        self.endpoint = endpoint
        """The client URL: ``http://127.0.0.1:PORT``."""
        self.log = log
        """The member's output."""
        self._copier: threading.Thread | None = None

    @property
    def endpoints(self) -> list[str]:
        """``[endpoint]``, as ``open_store(etcd=...)`` takes it."""
        return [self.endpoint]

    def new_prefix(self) -> str:
        """A key prefix no other store of this process has used, for a fresh store."""
        return f"watchstore-test-{os.getpid()}-{next(_prefixes)}"

    @classmethod
    def start(cls, directory: Path, *, timeout: float = 30.0) -> EtcdMember:
        """Start a member with its data and log in ``directory``; return once it serves
        clients. RuntimeError if etcd is not installed, exits, or is not ready within
        ``timeout`` seconds (its log's end in the message)."""
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError(
                "etcd is not installed (no `etcd` on PATH): install it (Debian and Ubuntu: "
                "apt-get install etcd-server) or put its directory on PATH"
            )
        client, peer = free_ports(2)
        endpoint, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        args = [
            binary,
            "--name=test",
            f"--data-dir={directory / 'data'}",
            f"--listen-client-urls={endpoint}",
            f"--advertise-client-urls={endpoint}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=watchstore-test-{os.getpid()}-{client}",
            "--log-level=info",  # the line that says it is ready is an info line
        ]
        log = directory / "etcd.log"
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        member = cls(process, endpoint, log)
        ready = threading.Event()
        assert process.stdout is not None
        copier = threading.Thread(
            target=copy_output, args=(process.stdout, log, ready), daemon=True
        )
        copier.start()
        member._copier = copier
        ready.wait(timeout)  # set by the ready line, or when the output ends
        if process.poll() is not None or not _said_ready(log):
            member.stop()
            tail = log.read_text(errors="replace")[-2000:]
            what = "exited" if process.returncode else f"was not ready within {timeout} s"
            raise RuntimeError(f"etcd {what}; the end of its log ({log}):\n{tail}")
        return member

    def stop(self) -> None:
        """Stop the member (SIGTERM, then SIGKILL after 5 s) and wait for it."""
        stop_process(self.process)
        if self._copier is not None:
            self._copier.join()  # the output ends with the process: the pipe is closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop an etcd process (SIGTERM, then SIGKILL after 5 s; a frozen one is resumed
    first, as a test may have stopped it) and wait for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def copy_output(
    stream: IO[bytes], log: Path, ready: threading.Event, *, append: bool = False
) -> None:
    """Copy an etcd member's output to ``log`` (after what it holds, with ``append``) until
    it ends; set ``ready`` at the line saying the member serves clients (or at the end, so a
    member that exits is not waited for). Run it in a thread of its own."""
    with stream, open(log, "ab" if append else "wb") as out:
        for line in stream:
            out.write(line)
            out.flush()
            if not ready.is_set() and any(marker in line for marker in READY):
                ready.set()
    ready.set()


def _said_ready(log: Path) -> bool:
    data = log.read_bytes()
    return any(marker in data for marker in READY)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
