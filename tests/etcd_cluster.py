"""Real etcd members for tests and benchmarks: loopback, free ports, temporary data dirs.

``EtcdCluster(tmp, size)`` starts ``size`` members of one cluster from Debian's
``etcd-server`` (``make deps-etcd`` installs it; ``make test`` does that itself) and stops
them on ``stop()``, killing what does not exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def etcd_binary() -> str | None:
    """The etcd executable on PATH, or None."""
    return shutil.which("etcd")


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


def post(endpoint: str, method: str, body: dict[str, Any], timeout: float = 2.0) -> Any:
    """One synchronous JSON-gateway call (for set-up and checks, not for the code tested)."""
    request = urllib.request.Request(
        f"{endpoint}/v3/{method}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class EtcdCluster:
    """``size`` etcd members on loopback; ``endpoints[i]`` is member ``i``'s client URL."""

    def __init__(self, tmp: Path, size: int = 1) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed: run `make deps-etcd` (Debian etcd-server)")
        ports = free_ports(2 * size)
        names = [f"m{i}" for i in range(size)]
        peers = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(size)]
        self.endpoints = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(size)]
        initial = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs = [tmp / f"etcd-{n}.log" for n in names]
        for i, name in enumerate(names):
            args = [
                binary,
                f"--name={name}",
                f"--data-dir={tmp / ('etcd-' + name)}",
                f"--listen-client-urls={self.endpoints[i]}",
                f"--advertise-client-urls={self.endpoints[i]}",
                f"--listen-peer-urls={peers[i]}",
                f"--initial-advertise-peer-urls={peers[i]}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                f"--initial-cluster-token=watchstore-{os.getpid()}-{ports[0]}",
                "--heartbeat-interval=50",
                "--election-timeout=500",
                "--log-level=warn",
            ]
            with open(self.logs[i], "wb") as log:
                self.processes.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        """Return once every (living) member answers a linearizable read."""
        deadline = time.monotonic() + timeout
        for i in range(len(self.endpoints)) if members is None else members:
            while True:
                try:
                    post(self.endpoints[i], "kv/range", {"key": "AA=="})
                    break
                except (OSError, urllib.error.URLError) as exc:
                    if self.processes[i].poll() is not None:
                        raise RuntimeError(
                            f"etcd member {i} exited: {self.logs[i].read_text()[-2000:]}"
                        ) from exc
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"etcd member {i} did not start") from exc
                    time.sleep(0.05)  # a separate process starting: poll, it has no event

    def leader(self) -> int:
        """The index of the current leader."""
        ids = {}
        leader = None
        for i, endpoint in enumerate(self.endpoints):
            if self.processes[i].poll() is not None:
                continue
            status = post(endpoint, "maintenance/status", {})
            ids[status["header"]["member_id"]] = i
            leader = status["leader"]
        assert leader is not None
        return ids[leader]

    def signal(self, member: int, sig: signal.Signals) -> None:
        """Send ``sig`` to a member (SIGKILL kills it, SIGSTOP freezes it)."""
        self.processes[member].send_signal(sig)
        if sig == signal.SIGKILL:
            self.processes[member].wait()

    def stop(self) -> None:
        """Stop every member (SIGKILL after 5 s) and wait for them."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
