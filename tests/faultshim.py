"""Fault injection for the store's file I/O: an LD_PRELOAD shim, child processes, a tmpfs.

The shim (``SHIM_SOURCE``, compiled once per session by the ``shim`` fixture) wraps the libc
calls the store makes on its files: write, pwrite, fsync, fdatasync, rename and ftruncate
(with their ``64``/``at`` variants). Nothing happens until a process arms a rule through
:class:`Faults` (ctypes calls into the shim): "the Nth call of fsync on a path containing
``.tmp`` fails with EIO", "every pwrite on ``.wslog`` writes only half", "the first write on
``.tmp`` blocks until a FIFO holds data". A rule counts only the calls on paths it matches
(the path of an fd is read from ``/proc/self/fd``; a filter ending in ``$`` matches the end of
the path, else any part of it), and a forked child inherits the rules and their counts.

A scenario is an ``async`` function of a test module, run in a child Python process with the
shim preloaded (``run_scenario``); it reports what happened as JSON lines on stdout
(``report``), and the test checks them, then reopens the store without the shim.
``python -m tests.faultshim MODULE:FUNCTION ARGS_JSON BACKEND`` is that child: it runs the
scenario with ``anyio.run`` on the AnyIO backend BACKEND (``trio`` or ``asyncio``), the test's
own.

``mounted_tmpfs`` mounts a small tmpfs for real ENOSPC (root only), and always unmounts it.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

SHIM_SOURCE: Final = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* What a rule does to the call it fires on. */
enum action { FAIL = 1, SHORT = 2, BLOCK = 3, NOTIFY = 4 };
enum op { OP_WRITE, OP_PWRITE, OP_FSYNC, OP_FDATASYNC, OP_RENAME, OP_FTRUNCATE };

struct rule {
    int op, action, nth, every, err;  /* fires on the nth matching call, or every one from it */
    int timeout_ms;  /* BLOCK: the longest wait */
    char path[512];  /* substring of the path, or its end if it ends in '$' */
    char notify[512], gate[512];  /* FIFOs (or ""): NOTIFY/BLOCK tell, BLOCK waits */
    long calls, hits;
};

#define MAX_RULES 8
static struct rule rules[MAX_RULES];
static volatile int nrules;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;

static void take(void) { pthread_mutex_lock(&mutex); }
static void give(void) { pthread_mutex_unlock(&mutex); }

/* A fork while another thread holds the mutex must not leave the child locked out. */
__attribute__((constructor)) static void setup(void) { pthread_atfork(take, give, give); }

int fault_add(int op, const char *path, int nth, int every, int action, int err,
              const char *notify, const char *gate, int timeout_ms) {
    take();
    int i = nrules;
    if (i < MAX_RULES) {
        struct rule r = {op, action, nth, every, err, timeout_ms};
        snprintf(r.path, sizeof r.path, "%s", path);
        snprintf(r.notify, sizeof r.notify, "%s", notify);
        snprintf(r.gate, sizeof r.gate, "%s", gate);
        rules[i] = r;
        nrules = i + 1;
    } else {
        i = -1;
    }
    give();
    return i;
}

void fault_clear(void) { take(); nrules = 0; give(); }

long fault_hits(int i) { take(); long n = rules[i].hits; give(); return n; }

static int matches(const char *filter, const char *path) {
    size_t n = strlen(filter), m = strlen(path);
    if (n > 0 && filter[n - 1] == '$')
        return m >= n - 1 && memcmp(path + m - (n - 1), filter, n - 1) == 0;
    return strstr(path, filter) != NULL;
}

/* Count this call in every rule matching op and one of the paths; copy the first rule that
   fires into *fired and return its action (0: none). */
static int check(int op, const char *path, const char *other, struct rule *fired) {
    int action = 0;
    take();
    for (int i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];
        if (r->op != op || !(matches(r->path, path) || (other && matches(r->path, other))))
            continue;
        r->calls++;
        if (!action && (r->calls == r->nth || (r->every && r->calls > r->nth))) {
            r->hits++;
            *fired = *r;
            action = r->action;
        }
    }
    give();
    return action;
}

static void fd_path(int fd, char *buf, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, size - 1);
    buf[n < 0 ? 0 : n] = '\0';
}

static void at_path(int dirfd, const char *name, char *buf, size_t size) {
    if (dirfd == AT_FDCWD || name[0] == '/') {
        snprintf(buf, size, "%s", name);
        return;
    }
    char dir[PATH_MAX];
    fd_path(dirfd, dir, sizeof dir);
    snprintf(buf, size, "%s/%s", dir, name);
}

#define REAL(ret, name, ...) \
    static ret (*real_##name)(__VA_ARGS__); \
    if (!real_##name) real_##name = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

/* NOTIFY and BLOCK: write "pid\n" to the FIFO r->notify (if a reader has it open). BLOCK
   then waits until the FIFO r->gate holds data, the timeout passes or a signal arrives, and
   lets the call go on; it holds the notify FIFO open meanwhile, so its reader sees the end of
   the file only once this process has gone on or died. The FIFOs are opened here, by path:
   a process may have closed every descriptor it inherited. */
static void wait_or_notify(const struct rule *r) {
    REAL(ssize_t, write, int, const void *, size_t);
    int notify = r->notify[0] ? open(r->notify, O_WRONLY | O_NONBLOCK | O_CLOEXEC) : -1;
    if (notify >= 0) {
        char line[32];
        int n = snprintf(line, sizeof line, "%d\n", (int)getpid());
        if (real_write(notify, line, (size_t)n) < 0) { /* the reader left: go on */ }
    }
    if (r->action == BLOCK) {
        int gate = r->gate[0] ? open(r->gate, O_RDONLY | O_NONBLOCK | O_CLOEXEC) : -1;
        struct pollfd wait = {gate, POLLIN, 0};
        poll(&wait, gate >= 0 ? 1 : 0, r->timeout_ms);
        if (gate >= 0) close(gate);
    }
    if (notify >= 0) close(notify);
}

/* The common part of every wrapper: -1 with errno set if the call must fail, else 0 (and
   *count halved for SHORT). */
static int inject(int op, const char *path, const char *other, size_t *count) {
    struct rule r = {0};
    if (!nrules) return 0;
    switch (check(op, path, other, &r)) {
    case FAIL:
        errno = r.err;
        return -1;
    case SHORT:
        if (count && *count > 1) *count /= 2;
        return 0;
    case BLOCK:
    case NOTIFY:
        wait_or_notify(&r);
        return 0;
    default:
        return 0;
    }
}

static int inject_fd(int op, int fd, size_t *count) {
    char path[PATH_MAX];
    if (!nrules) return 0;
    fd_path(fd, path, sizeof path);
    return inject(op, path, NULL, count);
}

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(ssize_t, write, int, const void *, size_t);
    if (inject_fd(OP_WRITE, fd, &count)) return -1;
    return real_write(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(ssize_t, pwrite, int, const void *, size_t, off_t);
    if (inject_fd(OP_PWRITE, fd, &count)) return -1;
    return real_pwrite(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    REAL(ssize_t, pwrite64, int, const void *, size_t, off64_t);
    if (inject_fd(OP_PWRITE, fd, &count)) return -1;
    return real_pwrite64(fd, buf, count, offset);
}

int fsync(int fd) {
    REAL(int, fsync, int);
    if (inject_fd(OP_FSYNC, fd, NULL)) return -1;
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(int, fdatasync, int);
    if (inject_fd(OP_FDATASYNC, fd, NULL)) return -1;
    return real_fdatasync(fd);
}

int ftruncate(int fd, off_t length) {
    REAL(int, ftruncate, int, off_t);
    if (inject_fd(OP_FTRUNCATE, fd, NULL)) return -1;
    return real_ftruncate(fd, length);
}

int ftruncate64(int fd, off64_t length) {
    REAL(int, ftruncate64, int, off64_t);
    if (inject_fd(OP_FTRUNCATE, fd, NULL)) return -1;
    return real_ftruncate64(fd, length);
}

int rename(const char *old, const char *new) {
    REAL(int, rename, const char *, const char *);
    if (inject(OP_RENAME, old, new, NULL)) return -1;
    return real_rename(old, new);
}

int renameat(int olddir, const char *old, int newdir, const char *new) {
    REAL(int, renameat, int, const char *, int, const char *);
    char a[2 * PATH_MAX], b[2 * PATH_MAX];
    if (nrules) {
        at_path(olddir, old, a, sizeof a);
        at_path(newdir, new, b, sizeof b);
        if (inject(OP_RENAME, a, b, NULL)) return -1;
    }
    return real_renameat(olddir, old, newdir, new);
}

int renameat2(int olddir, const char *old, int newdir, const char *new, unsigned int flags) {
    REAL(int, renameat2, int, const char *, int, const char *, unsigned int);
    char a[2 * PATH_MAX], b[2 * PATH_MAX];
    if (nrules) {
        at_path(olddir, old, a, sizeof a);
        at_path(newdir, new, b, sizeof b);
        if (inject(OP_RENAME, a, b, NULL)) return -1;
    }
    return real_renameat2(olddir, old, newdir, new, flags);
}
"""

OPS: Final = {"write": 0, "pwrite": 1, "fsync": 2, "fdatasync": 3, "rename": 4, "ftruncate": 5}
"""The calls the shim wraps (pwrite covers pwrite64, rename renameat/renameat2, ftruncate
ftruncate64)."""
FAIL, SHORT, BLOCK, NOTIFY = 1, 2, 3, 4
SHIM_ENV: Final = "WATCHSTORE_FAULTSHIM"
"""The environment variable naming the compiled shim in a scenario's process."""
ROOT: Final = Path(__file__).resolve().parents[1]


def require(what: str, present: bool) -> None:
    """Skip the test if ``what`` is missing (saying so); in CI (``CI`` set) fail instead."""
    import pytest

    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI runs every test")
    pytest.skip(f"{what} is missing")


def build_shim(directory: Path) -> Path:
    """Compile ``SHIM_SOURCE`` into ``directory``; return the shared library's path."""
    require("gcc (to build the LD_PRELOAD fault shim)", shutil.which("gcc") is not None)
    source = directory / "faultshim.c"
    library = directory / "faultshim.so"
    source.write_text(SHIM_SOURCE)
    flags = ("-shared", "-fPIC", "-O2", "-Wall", "-Werror")
    done = subprocess.run(
        ["gcc", *flags, "-o", str(library), str(source), "-ldl", "-lpthread"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"gcc failed to build the fault shim:\n{done.stderr}"
    return library


# -- the child's side ----------------------------------------------------------------------


class Faults:
    """The shim's rules in this process (a scenario's): each ``fail``/``short``/``block``/
    ``notify`` adds a rule and returns its number (for ``hits``); ``clear`` removes them all.

    ``op`` is a key of ``OPS``; ``path`` a filter on the file's path; the rule fires on the
    ``nth`` call of ``op`` on a matching path, or on every call from the ``nth`` if ``every``.
    """

    def __init__(self, library: str) -> None:
        lib = ctypes.CDLL(library)  # already loaded (LD_PRELOAD): the same instance
        self._add = lib.fault_add
        ints = [ctypes.c_int] * 4
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, *ints, *[ctypes.c_char_p] * 2]
        self._add.argtypes.append(ctypes.c_int)
        self._add.restype = ctypes.c_int
        self._hits = lib.fault_hits
        self._hits.argtypes = [ctypes.c_int]
        self._hits.restype = ctypes.c_long
        self._clear = lib.fault_clear
        self._clear.restype = None

    def _rule(self, op: str, path: str, nth: int, every: bool, action: int, **kw: Any) -> int:
        rule: int = self._add(
            OPS[op],
            path.encode(),
            nth,
            int(every),
            action,
            int(kw.get("err", 0)),
            str(kw.get("notify", "")).encode(),
            str(kw.get("gate", "")).encode(),
            int(kw.get("timeout_ms", 0)),
        )
        assert rule >= 0, "too many fault rules"
        return rule

    def fail(self, op: str, path: str, err: int, *, nth: int = 1, every: bool = False) -> int:
        """The call fails with ``err`` (an errno) and does nothing."""
        return self._rule(op, path, nth, every, FAIL, err=err)

    def short(self, op: str, path: str, *, nth: int = 1, every: bool = False) -> int:
        """A write writes only the first half of its bytes (at least one) and says so."""
        return self._rule(op, path, nth, every, SHORT)

    def block(
        self,
        op: str,
        path: str,
        *,
        notify: str = "",
        gate: str = "",
        timeout: float = 10.0,
        nth: int = 1,
        every: bool = False,
    ) -> int:
        """The call writes its pid to the FIFO ``notify`` and waits until the FIFO ``gate``
        holds data (see ``open_gate``), ``timeout`` seconds pass or a signal arrives; then
        it is made. Until then it holds ``notify`` open (see ``wait_closed``)."""
        return self._rule(
            op, path, nth, every, BLOCK, notify=notify, gate=gate, timeout_ms=int(timeout * 1000)
        )

    def notify(
        self, op: str, path: str, notify: str = "", *, nth: int = 1, every: bool = True
    ) -> int:
        """The call writes its pid as a line to the FIFO ``notify`` (""; nothing: the rule
        only counts its hits) and is made."""
        return self._rule(op, path, nth, every, NOTIFY, notify=notify)

    def hits(self, rule: int) -> int:
        """How many calls rule ``rule`` fired on (in this process)."""
        return int(self._hits(rule))

    def clear(self) -> None:
        """Remove every rule: the calls go through again."""
        self._clear()


def faults() -> Faults:
    """The shim of this scenario process (it runs with the shim preloaded)."""
    return Faults(os.environ[SHIM_ENV])


def report(event: str, **fields: Any) -> None:
    """Tell the test what happened: one JSON line on stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)


def describe(exc: BaseException) -> dict[str, Any]:
    """An exception for a report: its type, its classes, its message and errno."""
    return {
        "type": type(exc).__name__,
        "classes": [cls.__name__ for cls in type(exc).__mro__],
        "message": str(exc),
        "errno": getattr(exc, "errno", None),
    }


def main(argv: list[str]) -> None:
    """Run the scenario ``MODULE:FUNCTION`` with the JSON list of arguments, on the AnyIO
    backend named third."""
    import anyio

    module, _, name = argv[0].partition(":")
    scenario = getattr(importlib.import_module(module), name)
    try:
        anyio.run(scenario, *json.loads(argv[1]), backend=argv[2])
    except BaseException as exc:
        report("crashed", error=describe(exc), traceback=traceback.format_exc())
        raise


# -- the test's side -----------------------------------------------------------------------


@attrs.frozen
class Run:
    """A finished scenario: its reports (in order), exit status and stderr."""

    reports: list[dict[str, Any]]
    returncode: int
    stderr: str

    def events(self, event: str) -> list[dict[str, Any]]:
        """The reports of kind ``event``."""
        return [r for r in self.reports if r["event"] == event]

    def one(self, event: str) -> dict[str, Any]:
        """The one report of kind ``event`` (AssertionError if there is not exactly one)."""
        found = self.events(event)
        assert len(found) == 1, f"expected one {event!r} report, got {found}\n{self.stderr}"
        return found[0]

    def check_finished(self) -> None:
        """Assert that the scenario ran to its end (exit status 0)."""
        crashed = self.events("crashed")
        detail = crashed[0]["traceback"] if crashed else self.stderr
        assert self.returncode == 0, f"the scenario failed (status {self.returncode}):\n{detail}"


def scenario_command(
    scenario: Callable[..., Awaitable[None]], *args: Any, backend: str
) -> list[str]:
    """The command line of a child running ``scenario(*args)`` on AnyIO's ``backend``."""
    target = f"{scenario.__module__}:{scenario.__qualname__}"
    return [sys.executable, "-m", "tests.faultshim", target, json.dumps(args), backend]


def scenario_env(shim: Path | None) -> dict[str, str]:
    """The environment of a scenario: this one, the code under test first on the path (the
    watchstore this process imported, and this test suite), and the shim preloaded."""
    import watchstore

    paths = [str(Path(watchstore.__file__).resolve().parents[1]), str(ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    if shim is not None:
        env["LD_PRELOAD"] = str(shim)
        env[SHIM_ENV] = str(shim)
    return env


def run_scenario(
    scenario: Callable[..., Awaitable[None]],
    *args: Any,
    shim: Path | None,
    backend: str,
    timeout: float = 60.0,
    pass_fds: tuple[int, ...] = (),
) -> Run:
    """Run ``scenario(*args)`` on AnyIO's ``backend`` in a child process with ``shim``
    preloaded (None: without) until it exits (killed after ``timeout`` seconds); return its
    reports."""
    done = subprocess.run(
        scenario_command(scenario, *args, backend=backend),
        env=scenario_env(shim),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        pass_fds=pass_fds,
        check=False,
    )
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return Run(reports, done.returncode, done.stderr)


@contextmanager
def started_scenario(
    scenario: Callable[..., Awaitable[None]],
    *args: Any,
    shim: Path | None,
    backend: str,
    output: Path,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``scenario(*args)`` on AnyIO's ``backend`` in a child process for the block, its
    stdout and stderr going to ``output.out`` and ``output.err`` (files: reading them never
    waits for a process that inherited them); killed after the block if it still runs."""
    with (
        open(output.with_suffix(".out"), "wb") as out,
        open(output.with_suffix(".err"), "wb") as err,
        subprocess.Popen(
            scenario_command(scenario, *args, backend=backend),
            env=scenario_env(shim),
            cwd=ROOT,
            stdout=out,
            stderr=err,
            pass_fds=pass_fds,
        ) as child,
    ):
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=30)


def finished_run(output: Path, returncode: int) -> Run:
    """The reports of a scenario started with ``started_scenario(output=output)``."""
    lines = output.with_suffix(".out").read_text().splitlines()
    reports = [json.loads(line) for line in lines if line.startswith("{")]
    return Run(reports, returncode, output.with_suffix(".err").read_text())


def fifo(path: Path, *, never_ends: bool = False) -> int:
    """Make a FIFO at ``path`` for the shim's notifications; return its reading end
    (non-blocking). It reports the end of the file once every writer that came has gone
    (see ``wait_closed``) unless ``never_ends``: then this end is open for writing too."""
    os.mkfifo(path, 0o600)
    return os.open(path, (os.O_RDWR if never_ends else os.O_RDONLY) | os.O_NONBLOCK)


def open_gate(path: Path) -> int:
    """Let every call blocked on the gate FIFO ``path`` go on, and every later one pass at
    once, for as long as the returned descriptor is open (it holds the data)."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    os.write(fd, b"go")
    return fd


def read_line(fd: int, timeout: float) -> str | None:
    """The next line from the pipe ``fd`` (read a byte at a time: the rest stays in the
    pipe), or None if none comes within ``timeout`` seconds or the pipe is closed."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        byte = os.read(fd, 1)
        if not byte:
            return None
        data += byte
    return data.decode().strip()


def wait_closed(fd: int, timeout: float) -> bool:
    """Read the pipe ``fd`` until every writer has closed it (True), or ``timeout`` seconds
    pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        if not os.read(fd, 4096):
            return True


@contextmanager
def mounted_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (as mount's ``size=`` takes it, e.g. ``2m``) on
    ``directory`` (created) for the block; always unmounted after it (lazily if busy)."""
    require("root (to mount a tmpfs)", os.geteuid() == 0)
    require("mount", shutil.which("mount") is not None)
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield directory
    finally:
        done = subprocess.run(["umount", str(directory)], capture_output=True, timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], check=True, timeout=30)


@contextmanager
def read_only_view(directory: Path, view: Path) -> Iterator[Path]:
    """Bind-mount ``directory`` read-only on ``view`` (created) for the block; always
    unmounted after it. Even root cannot write through it."""
    require("root (to bind-mount a directory read-only)", os.geteuid() == 0)
    view.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "--bind", str(directory), str(view)], check=True, capture_output=True, timeout=30
    )
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(view)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        yield view
    finally:
        done = subprocess.run(["umount", str(view)], capture_output=True, timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(view)], check=True, timeout=30)


def free_bytes(directory: Path) -> int:
    """The bytes free for an unprivileged writer on the file system of ``directory``."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system of ``directory`` with a new file until less than ``leave`` +
    4 KiB are free (``leave`` 0: until a write fails with ENOSPC); return the file."""
    filler = directory / f"filler-{len(list(directory.glob('filler-*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while True:
            room = free_bytes(directory) - leave
            if leave and room < 4096:
                break
            try:
                os.write(fd, bytes(min(64 << 10, max(room // 4096 * 4096, 4096))))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


if __name__ == "__main__":
    main(sys.argv[1:])
