"""Real etcd members for tests and benchmarks: loopback, free ports, temporary data dirs.

``EtcdCluster(tmp, size)`` starts ``size`` members of one cluster from Debian's
``etcd-server`` (``make deps-etcd`` installs it; ``make test`` does that itself) and stops
them on ``stop()``, killing what does not exit. With ``tls=Tls.create(dir)`` the members
serve clients over TLS only and require a client certificate signed by the test CA.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from watchstore.testing.etcd import copy_output, etcd_binary, free_ports, stop_process

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def require_etcd() -> None:
    """Skip the calling test module when etcd is not installed, outside CI; in CI, fail
    (``make test`` installs it)."""
    if etcd_binary() is not None:
        return
    if os.environ.get("CI"):
        raise RuntimeError("CI needs etcd for these tests: `make test` installs etcd-server")
    import pytest

    pytest.skip("etcd is not installed: run `make deps`", allow_module_level=True)


@contextlib.contextmanager
def running(tmp: Path, size: int = 1) -> Iterator[EtcdCluster]:
    """A cluster of ``size`` members in ``tmp`` for the block; stopped after it."""
    cluster = EtcdCluster(tmp, size)
    try:
        yield cluster
    finally:
        cluster.stop()


@attrs.frozen
class Tls:
    """A test CA, a certificate for the members (127.0.0.1) and one for clients, as PEM
    files."""

    ca: Path
    server: tuple[Path, Path]
    """The members' certificate and key (also their client certificate: etcd's gateway
    calls the member's own gRPC server with it)."""
    client: tuple[Path, Path]

    @classmethod
    def create(cls, directory: Path) -> Tls:
        """Make the CA and both certificates in ``directory``."""
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "watchstore test CA")])
        ca_cert = (
            _builder(ca_name, ca_name, ca_key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        ca = directory / "ca.pem"
        ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

        def issue(name: str, usages: list[x509.ObjectIdentifier]) -> tuple[Path, Path]:
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            cert = (
                _builder(subject, ca_name, key.public_key(), now)
                .add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .sign(ca_key, hashes.SHA256())
            )
            cert_file, key_file = directory / f"{name}.pem", directory / f"{name}-key.pem"
            cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            return cert_file, key_file

        both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        return cls(ca, issue("server", both), issue("client", [ExtendedKeyUsageOID.CLIENT_AUTH]))

    def context(self, *, trust: bool = True, certificate: bool = True) -> ssl.SSLContext:
        """A client context: trusting the test CA (or only the system's), with the client
        certificate (or none)."""
        context = ssl.create_default_context(cafile=str(self.ca) if trust else None)
        if certificate:
            context.load_cert_chain(*map(str, self.client))
        return context


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def post(
    endpoint: str,
    method: str,
    body: dict[str, Any],
    timeout: float = 2.0,
    context: ssl.SSLContext | None = None,
) -> Any:
    """One synchronous JSON-gateway call (for set-up and checks, not for the code tested)."""
    request = urllib.request.Request(
        f"{endpoint}/v3/{method}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        return json.loads(response.read())


class EtcdCluster:
    """``size`` etcd members on loopback; ``endpoints[i]`` is member ``i``'s client URL."""

    def __init__(self, tmp: Path, size: int = 1, tls: Tls | None = None) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed: run `make deps-etcd` (Debian etcd-server)")
        ports = free_ports(2 * size)
        names = [f"m{i}" for i in range(size)]
        peers = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(size)]
        scheme = "http" if tls is None else "https"
        self.endpoints = [f"{scheme}://127.0.0.1:{ports[2 * i]}" for i in range(size)]
        self.context = None if tls is None else tls.context()
        """The context of the set-up calls (None without TLS)."""
        secure = (
            []
            if tls is None
            else [
                f"--cert-file={tls.server[0]}",
                f"--key-file={tls.server[1]}",
                f"--trusted-ca-file={tls.ca}",
                "--client-cert-auth",
            ]
        )
        initial = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
        self.processes: list[subprocess.Popen[bytes]] = []
        self._ready: dict[int, threading.Event] = {}
        self._copiers: dict[int, threading.Thread] = {}
        self.logs = [tmp / f"etcd-{n}.log" for n in names]
        self._args: list[list[str]] = []
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
                "--log-level=info",  # the line that says it serves clients is an info line
                *secure,
            ]
            self._args.append(args)
            self.processes.append(self._spawn(i, append=False))
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, member: int, *, append: bool) -> subprocess.Popen[bytes]:
        """Start ``member``'s process; a thread copies its output to its log and sets its
        ready event at the line saying it serves clients (see watchstore.testing.etcd)."""
        process = subprocess.Popen(
            self._args[member], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        ready = self._ready[member] = threading.Event()
        assert process.stdout is not None
        copier = self._copiers[member] = threading.Thread(
            target=copy_output,
            args=(process.stdout, self.logs[member], ready),
            kwargs={"append": append},
            daemon=True,
        )
        copier.start()
        return process

    def wait_ready(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        """Return once every member started has said it serves clients (it has published
        itself through the cluster's leader) and answers a linearizable read."""
        deadline = time.monotonic() + timeout
        for i in range(len(self.endpoints)) if members is None else members:
            said = self._ready[i].wait(max(deadline - time.monotonic(), 0.0))
            if self.processes[i].poll() is not None:
                raise RuntimeError(f"etcd member {i} exited: {self.logs[i].read_text()[-2000:]}")
            if not said:
                raise RuntimeError(f"etcd member {i} did not start within {timeout} s")
            post(self.endpoints[i], "kv/range", {"key": "AA=="}, context=self.context)

    def leader(self) -> int:
        """The index of the current leader."""
        ids = {}
        leader = None
        for i, endpoint in enumerate(self.endpoints):
            if self.processes[i].poll() is not None:
                continue
            status = post(endpoint, "maintenance/status", {}, context=self.context)
            ids[status["header"]["member_id"]] = i
            leader = status["leader"]
        assert leader is not None
        return ids[leader]

    def signal(self, member: int, sig: signal.Signals) -> None:
        """Send ``sig`` to a member (SIGKILL kills it, SIGSTOP freezes it)."""
        self.processes[member].send_signal(sig)
        if sig == signal.SIGKILL:
            self.processes[member].wait()

    def terminate(self, member: int, timeout: float = 30.0) -> None:
        """Stop a member gracefully (SIGTERM, as an init system does) and wait until it has
        exited: a leader hands its leadership over first. RuntimeError if it does not exit
        within ``timeout`` seconds."""
        process = self.processes[member]
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"etcd member {member} did not exit on SIGTERM") from None

    def restart(self, member: int, timeout: float = 30.0) -> None:
        """Start a stopped member again, on the same data dir and ports, and return once it
        answers a linearizable read (it has a leader and has caught up with it)."""
        if self.processes[member].poll() is None:
            raise RuntimeError(f"etcd member {member} is still running")
        self._copiers[member].join()  # the old process's output has ended
        self.processes[member] = self._spawn(member, append=True)
        self.wait_ready(timeout, members=[member])

    def stop(self) -> None:
        """Stop every member, one after the other (SIGKILL after 5 s), and wait for them.

        One at a time: members sent SIGTERM together hang (a leader hands its leadership to
        a follower that is stopping too) until killed; one by one, each exits at once.
        """
        for process in self.processes:
            stop_process(process)
        for copier in self._copiers.values():
            copier.join()  # each member's output ends with it
