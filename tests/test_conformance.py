"""Hostile-program conformance suite, run against every sandbox backend.

Each program must get its verdict and pass its check, and afterwards the host must be unaffected:
no sandbox process (zombies included) or container left beyond the idle warm pool, nothing written
outside the sandbox, no connection, datagram or DNS query reaching a host socket, and the next job
runs normally in an empty /tmp.

A check that passes whatever the sandbox does proves nothing. Each :class:`Hostile` names the
protections it depends on (``guards``); the suite runs every one of those again against a sandbox
with that protection switched off (test-only switches: no seccomp filter at all, or a shared
network) and requires its check to FAIL there. Where the kernel would refuse an attack anyway
(no capabilities), the program also makes a call the kernel alone would answer differently, so
the check can tell the filter's EPERM from the kernel's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from sandbox import seccomp
from sandbox.base import TestCase
from sandbox.bwrap import BwrapBackend
from sandbox.docker import DockerBackend
from sandbox.executor import READY
from sandbox.pool import PooledSandbox
from schemas.executions import Verdict as V
from schemas.submissions import Limits, MiB
from tests import leftovers
from tests.sandboxes import BACKENDS, FAST, Run, descendants, make_sandbox, process_table, run

SECRET = "hunter2-conformance-secret"
# The wall clock fires first (the CPU limit is out of reach)...
WALL = Limits(wall_time_ms=2000, cpu_time_ms=30_000)
# ...or the CPU limit does, long before the wall clock (0.5 core: 1 CPU second takes ~2 s).
CPU = Limits(wall_time_ms=15_000, cpu_time_ms=1000)
ROOMY = Limits(wall_time_ms=10_000, cpu_time_ms=10_000)
PIDS_LIMIT = 50  # BwrapConfig.pids / DockerConfig.pids, the sandbox-wide process cap
TMP_MB = 50  # BwrapConfig.tmp_bytes / DockerConfig.tmp_bytes, and the file size limit

# Every pool alive in this process: their idle sandboxes are the only sandbox processes allowed.
_LIVE: list[PooledSandbox] = []


@contextlib.asynccontextmanager
async def _sandbox(backend: str, **switches: bool) -> AsyncIterator[PooledSandbox]:
    os.environ["CODERUNNER_TEST_SECRET"] = SECRET  # must never be visible inside
    sb = await make_sandbox(backend, **switches)
    _LIVE.append(sb)
    try:
        yield sb
    finally:
        _LIVE.remove(sb)
        await sb.close()


@pytest.fixture(scope="module", params=BACKENDS)
async def sandbox(request: pytest.FixtureRequest) -> AsyncIterator[PooledSandbox]:
    async with _sandbox(request.param) as sb:
        yield sb


@pytest.fixture(scope="module", params=BACKENDS)
async def without_seccomp(request: pytest.FixtureRequest) -> AsyncIterator[PooledSandbox]:
    """Test-only: no outer bwrap filter, no harness filter, Docker's own profile unconfined."""
    async with _sandbox(request.param, seccomp_on=False) as sb:
        yield sb


@pytest.fixture(scope="module", params=BACKENDS)
async def without_network_isolation(request: pytest.FixtureRequest) -> AsyncIterator[PooledSandbox]:
    """Test-only: bwrap shares the host's network namespace, Docker uses its bridge network."""
    async with _sandbox(request.param, isolate_network=False) as sb:
        yield sb


# --- what the host listens on while a hostile program runs --------------------------------------


@dataclass
class Env:
    """The host side of a run: its listeners, and the addresses a networked sandbox would use."""

    sandbox: PooledSandbox
    tcp: socket.socket
    udp: socket.socket
    dns: socket.socket | None  # 127.0.0.1:53, where a resolver without resolv.conf sends queries
    hosts: list[str]

    @property
    def tcp_port(self) -> int:
        return int(self.tcp.getsockname()[1])

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    def received(self) -> list[str]:
        """Everything that reached a host socket (it must stay empty)."""
        got: list[str] = []
        with contextlib.suppress(TimeoutError):
            conn, peer = self.tcp.accept()
            conn.close()
            got.append(f"tcp connection from {peer}")
        for name, sock in (("udp", self.udp), ("dns", self.dns)):
            if sock is None:
                continue
            with contextlib.suppress(TimeoutError):
                data, peer = sock.recvfrom(4096)
                got.append(f"{name} datagram from {peer}: {data[:60]!r}")
        return got


def _gateways(sb: PooledSandbox) -> list[str]:
    """Where a container on the engine's default network reaches the host (its bridge gateway)."""
    if not isinstance(sb.backend, DockerBackend):
        return []
    found = ["10.88.0.1"]  # podman's default
    for name in ("bridge", "podman"):
        with contextlib.suppress(Exception):
            for cfg in sb.backend.api.inspect_network(name).get("IPAM", {}).get("Config") or []:
                if cfg.get("Gateway") and cfg["Gateway"] not in found:
                    found.append(cfg["Gateway"])
    return found


@contextlib.contextmanager
def _listeners(sb: PooledSandbox) -> Iterator[Env]:
    # On every interface: a bridged container reaches the host at its gateway address, not 127.0.0.1.
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    dns: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert dns is not None
    try:
        dns.bind(("127.0.0.1", 53))
    except OSError as exc:  # taken (a local resolver): that part of the DNS check is not possible here
        dns.close()
        dns = None
        if os.environ.get("CI"):  # never silently in CI
            raise AssertionError("127.0.0.1:53 is taken: the DNS leak check cannot run") from exc
    for s in (tcp, udp, dns):
        if s is not None:
            s.settimeout(0.2)
    try:
        yield Env(sb, tcp, udp, dns, ["127.0.0.1", "localhost", "::1", *_gateways(sb)])
    finally:
        for s in (tcp, udp, dns):
            if s is not None:
                s.close()


@pytest.fixture
def env(sandbox: PooledSandbox) -> Iterator[Env]:
    with _listeners(sandbox) as listening:
        yield listening


# --- leftovers -----------------------------------------------------------------------------------


async def _leftovers(sb: PooledSandbox) -> list[str]:
    """Sandbox processes or containers that are not part of an idle warm sandbox."""
    await sb.pool.settle()
    backend = sb.backend
    problems: list[str] = []
    if isinstance(backend, BwrapBackend):
        # Every sandbox process descends from this process, which is also a child subreaper: an
        # orphaned sandbox process is re-parented here, never to the host's init. So any
        # descendant outside an idle sandbox is a leftover, whatever its uid, zombies included
        # (a zombie nobody reaps holds a pid and counts against RLIMIT_NPROC of its uid).
        table = process_table()
        allowed: set[int] = set()
        for live in _LIVE:
            for inst in live.pool.idle_instances():
                root = inst.proc.pid  # type: ignore[attr-defined]
                allowed |= {root} | descendants(root, table)
        for pid in sorted(descendants(os.getpid(), table) - allowed):
            if not leftovers.sandbox_process(pid):
                continue  # the test session's own servers and processes
            ppid, state = table[pid]
            problems.append(f"process {pid} (parent {ppid}, state {state}): {leftovers.cmdline(pid)[:120]}")
    elif isinstance(backend, DockerBackend):
        containers = await asyncio.to_thread(
            backend.api.containers, all=True, filters={"label": f"coderunner.runner={backend.config.runner_id}"}
        )
        idle_ids = {inst.id for live in _LIVE for inst in live.pool.idle_instances()}  # type: ignore[attr-defined]
        problems += [f"container {c['Id'][:12]} {c['State']}" for c in containers if c["Id"] not in idle_ids]
    return problems


async def assert_host_unaffected(sb: PooledSandbox) -> None:
    # Killed processes take a moment to be reaped and a refill may be starting: poll, don't sleep.
    deadline = asyncio.get_running_loop().time() + 10
    while problems := await _leftovers(sb):
        assert asyncio.get_running_loop().time() < deadline, f"outlived their job: {problems}"
        await asyncio.sleep(0.05)
    # The next job runs normally, in a fresh sandbox: nothing the last program left is visible.
    after = await run(sb, "import os\nprint('next job fine', os.listdir('/tmp'))")
    assert after.outcome.verdict is V.OK, after
    assert after.stdout == "next job fine []\n"


# --- hostile programs ----------------------------------------------------------------------------

Check = Callable[[Run, Env], None]


@dataclass(frozen=True)
class Hostile:
    """A hostile program, the verdicts it may get, and a check that raises AssertionError.

    ``guards``: the protections the check depends on ("seccomp", "network"). With one of them
    switched off, the check must fail (``test_check_fails_without_seccomp``,
    ``test_check_fails_without_network_isolation``).
    """

    name: str
    code: str | Callable[[Env], str]
    verdicts: tuple[V, ...]
    check: Check | None = None
    stdin: str = ""
    limits: Limits = FAST
    guards: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return self.name

    def source(self, env: Env) -> str:
        return self.code(env) if callable(self.code) else self.code


async def attempt(sb: PooledSandbox, hostile: Hostile, env: Env) -> Run:
    return await run(sb, hostile.source(env), stdin=hostile.stdin, limits=hostile.limits)


def verify(hostile: Hostile, r: Run, env: Env) -> None:
    """Every check of a hostile run: raises AssertionError when one fails."""
    assert r.outcome.verdict in hostile.verdicts, (r.outcome, r.stdout[-600:], r.stderr[-600:])
    if hostile.check:
        hostile.check(r, env)
    # Nothing reached the host's sockets, and nothing was written outside the sandbox.
    got = env.received()
    assert not got, got
    assert not os.path.exists("/escape")


def _c(src: str) -> str:
    return textwrap.dedent(src).strip() + "\n"


def _in(*needles: str) -> Check:
    def check(r: Run, env: Env) -> None:
        for needle in needles:
            assert needle in r.stdout, f"{needle!r} not in {r.stdout[-800:]!r}"

    return check


def _not_in(*needles: str) -> Check:
    def check(r: Run, env: Env) -> None:
        for needle in needles:
            assert needle not in r.stdout + r.stderr, f"{needle!r} leaked: {r.stdout[-800:]!r}"

    return check


def _all(*checks: Check) -> Check:
    def check(r: Run, env: Env) -> None:
        for c in checks:
            c(r, env)

    return check


def _truncated(stream: str) -> Check:
    def check(r: Run, env: Env) -> None:
        assert getattr(r.outcome, f"{stream}_truncated")
        assert len(getattr(r, stream).encode()) <= FAST.output_bytes

    return check


def _wall_clock(r: Run, env: Env) -> None:
    assert "wall-clock" in (r.outcome.message or ""), r.outcome


def _cpu_limit(r: Run, env: Env) -> None:
    # The CPU limit ended it, well before the wall clock would have.
    assert r.outcome.duration_ms < CPU.wall_time_ms / 2, r.outcome
    assert "CPU" in (r.outcome.message or ""), r.outcome


def _results(r: Run) -> dict[str, str]:
    """``probe result`` lines (result: ``ok <value>`` or an errno name)."""
    found: dict[str, str] = {}
    for line in r.stdout.splitlines():
        probe, _, result = line.partition(" ")
        found.setdefault(probe, result)
    return found


def _refused(*probes: str, how: str = "EPERM") -> Check:
    """Each probe failed with exactly ``how`` (what the seccomp filter returns for it)."""

    def check(r: Run, env: Env) -> None:
        got = _results(r)
        for probe in probes:
            assert got.get(probe) == how, f"{probe}: {got.get(probe)!r}, not {how} ({r.stdout[-800:]!r})"

    return check


def _eperm(*syscalls_and_probes: tuple[str, str]) -> Check:
    """Each probe got what the filter answers for its syscall (:func:`seccomp.denial_errno`)."""

    def check(r: Run, env: Env) -> None:
        for syscall, probe in syscalls_and_probes:
            _refused(probe, how=errno.errorcode[seccomp.denial_errno(syscall)])(r, env)

    return check


# Raw system calls: every argument passed as a C long (pointers as addresses); prints
# "<probe> ok <value>" or "<probe> <ERRNO>".
SYSCALL = _c(
    """
    import ctypes, errno, os, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    def sc(nr, *args):
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
        return r, ctypes.get_errno()
    def say(probe, r, e):
        print(probe, ('ok %d' % r) if r >= 0 else errno.errorcode.get(e, str(e)), flush=True)
    def addr(obj):
        return ctypes.addressof(obj)
    def cstr(b):
        return ctypes.create_string_buffer(b)
    """
)

# Where the program itself would look for the host: the default gateway of its namespace, if any.
NET = _c(
    """
    import errno, socket, struct
    def gateways():
        found = []
        try:
            for line in open('/proc/net/route').read().splitlines()[1:]:
                f = line.split()
                if f[1] == '00000000' and f[2] != '00000000':
                    found.append(socket.inet_ntoa(struct.pack('<I', int(f[2], 16))))
        except OSError:
            pass
        return found
    def why(e):
        if isinstance(e, socket.gaierror) or not e.errno:
            return type(e).__name__
        return errno.errorcode.get(e.errno, str(e.errno))
    """
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _net(env: Env, body: str) -> str:
    return NET + f"HOSTS = {env.hosts!r} + gateways()\nTCP_PORT, UDP_PORT = {env.tcp_port}, {env.udp_port}\n" + _c(body)


def _unreachable(verb: str, *, required: bool = True) -> Check:
    """Beyond loopback there is no route at all (ENETUNREACH): no network, not just a closed port."""

    def check(r: Run, env: Env) -> None:
        lines = [line.split() for line in r.stdout.splitlines() if line.startswith(verb + " ")]
        assert lines or not required, r.stdout
        for words in lines:
            if words[1] not in LOOPBACK and not words[1].startswith("127."):
                assert words[2:] == ["ENETUNREACH"], f"{words}: the sandbox has a route ({r.stdout[-800:]!r})"

    return check


def _tmp_capped(r: Run, env: Env) -> None:
    # Stopped by the /tmp size (ENOSPC) or the file size limit (EFBIG), both 50 MiB.
    _, chunks, code = r.stdout.split()
    assert int(chunks) * 1_000_000 <= TMP_MB * MiB and int(code) in (errno.ENOSPC, errno.EFBIG), r.stdout


def _counted_below(limit: int) -> Check:
    def check(r: Run, env: Env) -> None:
        words = r.stdout.split()
        assert words[0] == "stopped", r.stdout
        assert int(words[1]) < limit and words[2] == "EAGAIN", r.stdout

    return check


def _files_counted(r: Run, env: Env) -> None:
    if r.outcome.verdict is V.RUNTIME_ERROR:  # the harness's cap on files (inodes) ended the job
        assert "files" in (r.outcome.message or ""), r.outcome
        return
    words = r.stdout.split()
    made, listed = int(words[1]), int(words[-1])
    assert made == listed, r.stdout  # every file the program made exists, nothing more
    if words[0] == "stopped":  # an inode or size cap stopped it: with a "no space" error
        assert words[2] in ("ENOSPC", "EDQUOT"), r.stdout
    else:
        assert made == 20_000, r.stdout


def _probing(r: Run, env: Env) -> None:
    got = _results(r)
    assert got["/dev/mem"] == "ENOENT", got
    for path in ("/dev/kmsg", "/proc/kcore", "/proc/kmsg"):
        assert not got[path].startswith("read"), f"{path}: {got[path]}"  # absent, refused, or empty
    for path in ("/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern", "/sys/kernel/uevent_helper"):
        assert got[path + ":write"] != "wrote", f"{path} written"
    assert got["/sys/kernel/debug:list"] in ("ENOENT", "EACCES", "listed 0"), got  # no debugfs


HOSTILE = [
    # --- processes, memory, time -------------------------------------------------------------
    Hostile("fork_bomb", _c("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """), (V.TIME_LIMIT,), _wall_clock, limits=WALL),
    Hostile("fork_count", _c("""
        import errno, os, time
        n = 0
        try:
            while n < 1000:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
        except OSError as e:
            print('stopped', n, errno.errorcode[e.errno])
        else:
            print('made', n)
        """), (V.OK,), _counted_below(PIDS_LIMIT), limits=ROOMY),
    Hostile("thread_bomb", _c("""
        import errno, threading, time
        n = 0
        try:
            while n < 1000:
                threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); n += 1
        except RuntimeError as e:
            print('stopped', n, 'EAGAIN' if "can't start new thread" in str(e) else e)
        else:
            print('made', n)
        """), (V.OK,), _counted_below(PIDS_LIMIT), limits=ROOMY),
    Hostile("memory_bomb", "a = []\nwhile True:\n    a.append(' ' * 10**7)\n", (V.MEMORY_LIMIT,)),
    Hostile("slow_leak", _c("""
        import time
        a = []
        while True:
            a.append(bytearray(b'x' * 2_000_000)); time.sleep(0.002)
        """), (V.MEMORY_LIMIT,)),
    Hostile("cpu_spin", "while True:\n    pass\n", (V.TIME_LIMIT,), _cpu_limit, limits=CPU),
    Hostile("sleep_forever", "import time\ntime.sleep(10**6)\n", (V.TIME_LIMIT,), _wall_clock, limits=WALL),
    Hostile("endless_stdout", "while True:\n    print('spam' * 100)\n", (V.OUTPUT_LIMIT,), _truncated("stdout")),
    Hostile("endless_stderr", "import sys\nwhile True:\n    sys.stderr.write('e' * 999)\n", (V.OUTPUT_LIMIT,),
            _truncated("stderr")),
    Hostile("ten_mb_line", "import sys\nsys.stdout.write('y' * 10_000_000)\n", (V.OUTPUT_LIMIT,),
            _truncated("stdout")),
    Hostile("invalid_utf8_nul_ansi", "import sys\nsys.stdout.buffer.write(b'ok\\xff\\xfe\\x00\\x1b[31mred\\n')\n",
            (V.OK,), lambda r, env: _eq(r.stdout, "ok\ufffd\ufffd\x00\x1b[31mred\n")),
    Hostile("fill_tmp", _c("""
        n = 0
        try:
            with open('/tmp/fill', 'wb') as f:
                while True:
                    f.write(b'\\0' * 1_000_000); f.flush(); n += 1
        except OSError as e:
            print('stopped', n, e.errno)
        """), (V.OK,), _tmp_capped, limits=ROOMY),
    Hostile("many_small_files", _c("""
        import errno, os
        n = 0
        try:
            while n < 20_000:
                open(f'/tmp/f{n}', 'w').close(); n += 1
            print('made', n, end=' ')
        except OSError as e:
            print('stopped', n, errno.errorcode[e.errno], end=' ')
        print('listed', len(os.listdir('/tmp')))
        """), (V.OK, V.RUNTIME_ERROR), _files_counted, limits=ROOMY),
    Hostile("double_fork_daemon", _c("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(3600)
            os._exit(0)
        print('parent exits')
        """), (V.OK,), _in("parent exits")),
    Hostile("timeout_while_children_hold_pipes", _c("""
        import os, time
        for _ in range(5):
            if os.fork() == 0:
                time.sleep(3600)
        time.sleep(3600)
        """), (V.TIME_LIMIT,), _wall_clock, limits=WALL),
    Hostile("zombies", _c("""
        import os
        n = 0
        for _ in range(30):
            if os.fork() == 0:
                os._exit(0)
            n += 1
        print('zombies', n)
        """), (V.OK,), _in("zombies 30")),
    Hostile("exhaust_fds", _c("""
        import errno, os
        fds = []
        try:
            while True:
                fds.append(os.open('/dev/null', os.O_RDONLY))
        except OSError as e:
            print('stopped at', len(fds), errno.errorcode[e.errno])
        """), (V.OK,), lambda r, env: _assert(
            r.stdout.split()[3] == "EMFILE" and int(r.stdout.split()[2]) <= FAST.open_files, r.stdout)),
    Hostile("deep_recursion_segfault", "import sys\nsys.setrecursionlimit(10**9)\ndef f(n): return f(n + 1)\nf(0)\n",
            (V.RUNTIME_ERROR, V.MEMORY_LIMIT)),
    Hostile("huge_stdin_echo", "import sys\ndata = sys.stdin.read()\nprint(len(data))\n", (V.OK,),
            _in("2000000"), stdin="z" * 2_000_000),
    Hostile("fake_result_markers", _c(f"""
        import os, sys
        os.write(1, {READY!r})
        print('{{"exit-code": 0}}')
        print('{{"child-pid": 1}}', file=sys.stderr)
        print('{{"done": true}}')
        sys.exit(7)
        """), (V.RUNTIME_ERROR,), lambda r, env: _assert(r.outcome.exit_code == 7, r.outcome)),
    # --- signals -----------------------------------------------------------------------------
    # The program's parent is the init of its pid namespace (the harness), which gets no signal
    # from inside that it has no handler for; kill(-1) reaches every other process of the job.
    Hostile("signal_parent", _c("""
        import os, signal
        ppid = os.getppid()
        try:
            os.kill(ppid, signal.SIGKILL); print('sent', ppid)
        except OSError as e:
            print('refused', ppid, e.errno)
        print('still here')
        """), (V.OK,), _in("still here")),
    Hostile("kill_everything", _c("""
        import os, signal, time
        kids = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                time.sleep(60); os._exit(0)
            kids.append(pid)
        os.kill(-1, signal.SIGKILL)
        killed = sum(os.WIFSIGNALED(os.waitpid(pid, 0)[1]) for pid in kids)
        print('survived, killed', killed)
        """), (V.OK,), _in("survived, killed 3")),
    # --- files -------------------------------------------------------------------------------
    Hostile("write_outside_tmp", _c("""
        for p in ['/escape', '/usr/escape', '/etc/escape', '/home/escape', '/root/escape', '/var/escape',
                  '/proc/escape', '/dev/escape', '/dev/shm/../escape']:
            try:
                open(p, 'w').write('x'); print('WROTE', p)
            except OSError:
                print('denied', p)
        """), (V.OK,), _all(_not_in("WROTE"), _in("denied /escape", "denied /usr/escape", "denied /dev/escape"))),
    Hostile("read_shadow", _c("""
        for p in ['/etc/shadow', '/etc/gshadow', '/root/.bashrc']:
            try:
                open(p).read(); print('READ', p)
            except OSError:
                print('denied', p)
        """), (V.OK,), _all(_not_in("READ"), _in("denied /etc/shadow", "denied /root/.bashrc"))),
    Hostile("proc_environ_and_environment", _c("""
        import os
        print(dict(os.environ))
        for pid in ['1', 'self', str(os.getppid())]:
            try:
                print(open(f'/proc/{pid}/environ', 'rb').read())
            except OSError as e:
                print('denied', pid)
        """), (V.OK,), _not_in(SECRET, "NATS_URL", "DOCKER_HOST", "CODERUNNER_TEST_SECRET")),
    Hostile("docker_socket_search", _c("""
        import os
        found = []
        for p in ['/var/run/docker.sock', '/run/docker.sock', '/run/podman/podman.sock',
                  '/run/coderunner-podman.sock', '/var/run/podman/podman.sock',
                  '/run/containerd/containerd.sock']:
            if os.path.lexists(p):
                found.append(p)
        print('found', found)
        """), (V.OK,), _in("found []")),
    # The names a naive host would read back or write into (Judge0 CVE-2024-28185/28189): planted
    # for real, pointing at host secrets. The host never follows a path in a sandbox, and the next
    # job (assert_host_unaffected) starts with an empty /tmp.
    Hostile("plant_symlinks_and_hardlinks", _c("""
        import errno, os, sys
        planted = []
        for name, target in [('/tmp/main.py', '/etc/passwd'), ('/tmp/result.json', '/etc/shadow'),
                             ('/tmp/stdout', '/proc/1/environ'), ('/tmp/out', '/'), ('/tmp/input', '/proc/self/fd/1'),
                             ('/tmp/script.py', '/run/coderunner-podman.sock')]:
            os.symlink(target, name); planted.append(name)
        print('planted', len(planted))
        try:
            os.link(os.path.realpath(sys.executable), '/tmp/hard'); print('hardlinked')
        except OSError as e:
            print('no hardlink', errno.errorcode[e.errno])
        """), (V.OK,), _in("planted 6", "no hardlink EXDEV")),
    Hostile("dev_and_proc_probing", _c("""
        import errno, os
        def err(e):
            return errno.errorcode.get(e.errno, str(e.errno))
        for p in ['/dev/mem', '/dev/kmsg', '/proc/kcore', '/proc/kmsg']:
            try:
                with open(p, 'rb') as f:
                    data = f.read(64)
                print(p, 'read %d' % len(data) if data else 'empty')
            except OSError as e:
                print(p, err(e))
        for p in ['/proc/sysrq-trigger', '/proc/sys/kernel/core_pattern', '/sys/kernel/uevent_helper']:
            try:
                with open(p, 'w') as f:
                    f.write('b' if 'sysrq' in p else '|/tmp/x')
                print(p + ':write', 'wrote')
            except OSError as e:
                print(p + ':write', err(e))
        try:
            print('/sys/kernel/debug:list', 'listed %d' % len(os.listdir('/sys/kernel/debug')))
        except OSError as e:
            print('/sys/kernel/debug:list', err(e))
        """), (V.OK,), _probing),
    Hostile("setuid_tricks", _c("""
        import os, subprocess, sys
        for f in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.seteuid(0)):
            try:
                f(); print('BECAME ROOT')
            except OSError:
                print('denied')
        try:
            subprocess.run([sys.executable, '-c', 'print("EXECUTED")'], timeout=5); print('spawned')
        except OSError as e:
            print('no spawn', e.errno)
        print(os.getuid(), os.geteuid())
        for exe in ['/usr/bin/su', '/usr/bin/passwd', '/usr/bin/mount', '/bin/sh']:
            try:
                os.execv(exe, [exe, '-c', 'echo EXECUTED']); print('EXECUTED', exe)
            except OSError as e:
                print('no exec', exe, e.errno)
        """), (V.OK,), _all(_not_in("BECAME ROOT", "EXECUTED"),
                             _in("1000 1000", "no spawn 1", "no exec /usr/bin/su 1", "no exec /bin/sh 1")),
            guards=frozenset({"seccomp"})),
    # --- network -----------------------------------------------------------------------------
    Hostile("tcp_to_host", lambda env: _net(env, """
        for host in HOSTS:
            try:
                socket.create_connection((host, TCP_PORT), timeout=1).close(); print('CONNECTED', host)
            except OSError as e:
                print('tcp', host, why(e))
        """), (V.OK,), _all(_not_in("CONNECTED"), _in("tcp 127.0.0.1"), _unreachable("tcp")),
            guards=frozenset({"network"})),
    Hostile("udp_to_host", lambda env: _net(env, """
        for host in HOSTS:
            try:
                with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(b'escape', (host, UDP_PORT))
                print('udp', host, 'sent')
            except OSError as e:
                print('udp', host, why(e))
        """), (V.OK,), _all(_in("udp 127.0.0.1"), _unreachable("udp")), guards=frozenset({"network"})),
    # Only files may answer (podman writes /etc/hosts, even for a container without a network): a
    # name that only DNS could answer stays unresolved; no query reaches the host's port 53 (where
    # a resolver without resolv.conf sends it), and no name server of resolv.conf is reachable.
    Hostile("dns_lookup", _c("""
        import errno, socket
        query = bytes.fromhex('123401000001000000000000076578616d706c6503636f6d0000010001')  # example.com A
        try:
            servers = [line.split()[1] for line in open('/etc/resolv.conf') if line.startswith('nameserver')]
        except OSError:
            servers = []
        for server in servers:
            try:
                with socket.socket(socket.AF_INET6 if ':' in server else socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(query, (server, 53))
                print('nameserver', server, 'sent')
            except OSError as e:
                print('nameserver', server, errno.errorcode.get(e.errno, e.errno))
        try:
            listed = {w for line in open('/etc/hosts') for w in line.split('#')[0].split()[1:]}
        except OSError:
            listed = set()
        for host in ['example.com', 'nats', 'host.containers.internal', 'host.docker.internal', 'localhost']:
            source = 'files' if host in listed else 'dns'
            try:
                print('RESOLVED', source, host, sorted({a[4][0] for a in socket.getaddrinfo(host, 80)}))
            except socket.gaierror as e:
                print('unresolved', source, host, e.errno)
        """), (V.OK,), _all(lambda r, env: _dns_contained(r), _unreachable("nameserver", required=False)),
            guards=frozenset({"network"})),
    Hostile("connect_platform_ports", lambda env: _net(env, """
        for host in HOSTS + ['10.0.0.1', '172.17.0.1', '192.168.1.1']:
            for port in [4222, 6379, 27017, 8000, 8222, 2375, 2376, TCP_PORT]:
                try:
                    socket.create_connection((host, port), timeout=0.1).close(); print('CONNECTED', host, port)
                except OSError as e:
                    print('tcp', host, why(e))
        print('done')
        """), (V.OK,), _all(_in("done"), _not_in("CONNECTED"), _unreachable("tcp")), limits=ROOMY,
            guards=frozenset({"network"})),
    Hostile("network_interfaces", _c("""
        print('interfaces', sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]))
        print('routes', len(open('/proc/net/route').read().splitlines()) - 1)
        """), (V.OK,), _in("interfaces ['lo']", "routes 0"), guards=frozenset({"network"})),
    # --- kernel interfaces: seccomp ------------------------------------------------------------
    Hostile("ptrace_parent", SYSCALL + _c("""
        import time
        say('attach_parent', *sc(101, 16, os.getppid(), 0, 0))
        child = os.fork()
        if child == 0:
            libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the harness made the job non-dumpable
            time.sleep(60); os._exit(0)
        time.sleep(0.2)
        say('attach_child', *sc(101, 16, child, 0, 0))  # allowed by the kernel alone (same uid)
        os.kill(child, 9); os.waitpid(child, 0)
        """), (V.OK,), _eperm(("ptrace", "attach_parent"), ("ptrace", "attach_child")),
            guards=frozenset({"seccomp"})),
    Hostile("ptrace_traceme", SYSCALL + _c("""
        child = os.fork()
        if child == 0:
            r, e = sc(101, 0, 0, 0, 0)  # PTRACE_TRACEME
            os._exit(0 if r == 0 else min(e, 255))
        code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        print('traceme', 'ok 0' if code == 0 else errno.errorcode.get(code, code))
        """), (V.OK,), _eperm(("ptrace", "traceme")), guards=frozenset({"seccomp"})),
    Hostile("process_vm_readv", SYSCALL + _c("""
        class iovec(ctypes.Structure):
            _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
        secret, out = cstr(b'secret' * 10), ctypes.create_string_buffer(64)
        local, remote, elsewhere = iovec(addr(out), 60), iovec(addr(secret), 60), iovec(0x400000, 60)
        say('readv_self', *sc(310, os.getpid(), addr(local), 1, addr(remote), 1, 0))
        say('readv_parent', *sc(310, os.getppid(), addr(local), 1, addr(elsewhere), 1, 0))
        say('writev_self', *sc(311, os.getpid(), addr(local), 1, addr(remote), 1, 0))
        """), (V.OK,), _eperm(("process_vm_readv", "readv_self"), ("process_vm_readv", "readv_parent"),
                              ("process_vm_writev", "writev_self")), guards=frozenset({"seccomp"})),
    Hostile("unshare_via_ctypes", SYSCALL + _c("""
        for name, flags in [('newuser', 0x10000000), ('newns', 0x20000), ('newnet', 0x40000000), ('nothing', 0)]:
            say('unshare_' + name, *sc(272, flags))
        say('setns', *sc(308, 0, 0))
        """), (V.OK,), _eperm(*(("unshare", f"unshare_{n}") for n in ("newuser", "newns", "newnet", "nothing")),
                              ("setns", "setns")), guards=frozenset({"seccomp"})),
    Hostile("clone_namespaces", SYSCALL + _c("""
        for name, flags in [('newuser', 0x10000000), ('newns', 0x20000), ('newnet', 0x40000000),
                            ('user_ns_net', 0x50020000)]:
            r, e = sc(56, flags | 17, 0, 0, 0, 0)  # | SIGCHLD, no new stack: fork-like
            if r == 0:
                os._exit(0)
            if r > 0:
                os.waitpid(r, 0)
            say('clone_' + name, r, e)
        pid = os.fork()  # a plain fork (clone without namespace flags) still works
        if pid == 0:
            os._exit(0)
        print('fork ok', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """), (V.OK,), _all(_eperm(*(("clone", f"clone_{n}") for n in ("newuser", "newns", "newnet", "user_ns_net"))),
                             _in("fork ok 0")), guards=frozenset({"seccomp"})),
    Hostile("clone3", SYSCALL + _c("""
        import threading
        for name, flags in [('newuser', 0x10000000), ('plain', 0)]:
            args = (ctypes.c_uint64 * 11)(flags, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0)  # exit_signal SIGCHLD
            r, e = sc(435, addr(args), 88)
            if r == 0:
                os._exit(0)
            if r > 0:
                os.waitpid(r, 0)
            say('clone3_' + name, r, e)
        t = threading.Thread(target=print, args=('thread ok',))  # the C library falls back to clone
        t.start(); t.join()
        """), (V.OK,), _all(_eperm(("clone3", "clone3_newuser"), ("clone3", "clone3_plain")), _in("thread ok")),
            guards=frozenset({"seccomp"})),
    Hostile("memfd_execveat", SYSCALL + _c("""
        fd = os.memfd_create('x', 0)  # a copy of the interpreter, run from memory
        python = os.path.realpath(sys.executable)
        with open(python, 'rb') as f:
            os.write(fd, f.read())
        argv = (ctypes.c_char_p * 6)(python.encode(), b'-I', b'-S', b'-c', b'print("EXECUTED")', None)
        envp = (ctypes.c_char_p * 1)(None)
        empty, path = cstr(b''), cstr(b'/proc/self/fd/%d' % fd)
        say('execveat_memfd', *sc(322, fd, addr(empty), addr(argv), addr(envp), 0x1000))  # AT_EMPTY_PATH
        say('execve_memfd', *sc(59, addr(path), addr(argv), addr(envp)))
        """), (V.OK,), _all(_eperm(("execveat", "execveat_memfd"), ("execve", "execve_memfd")), _not_in("EXECUTED")),
            guards=frozenset({"seccomp"})),
    Hostile("io_uring", SYSCALL + _c("""
        params = ctypes.create_string_buffer(120)
        say('io_uring_setup', *sc(425, 4, addr(params)))
        say('io_uring_register', *sc(427, 0, 0, 0, 0))
        """), (V.OK,), _eperm(("io_uring_setup", "io_uring_setup"), ("io_uring_register", "io_uring_register")),
            guards=frozenset({"seccomp"})),
    Hostile("userfaultfd", SYSCALL + "say('userfaultfd', *sc(323, 1 | os.O_CLOEXEC))  # UFFD_USER_MODE_ONLY\n",
            (V.OK,), _eperm(("userfaultfd", "userfaultfd")), guards=frozenset({"seccomp"})),
    Hostile("bpf", SYSCALL + _c("""
        attr = ctypes.create_string_buffer(128)
        say('bpf_map_create', *sc(321, 0, addr(attr), 128))  # the kernel alone: EINVAL
        say('bpf_prog_load', *sc(321, 5, addr(attr), 128))
        """), (V.OK,), _eperm(("bpf", "bpf_map_create"), ("bpf", "bpf_prog_load")), guards=frozenset({"seccomp"})),
    Hostile("perf_event_open", SYSCALL + _c("""
        attr = ctypes.create_string_buffer(128)
        struct.pack_into('=IIQ', attr, 0, 1, 128, 1)  # PERF_TYPE_SOFTWARE, size, PERF_COUNT_SW_TASK_CLOCK
        struct.pack_into('=Q', attr, 40, 1 | 1 << 5 | 1 << 6)  # disabled, exclude_kernel, exclude_hv
        say('perf_event_open', *sc(298, addr(attr), 0, -1, -1, 0))  # this process: paranoid <= 2 allows it
        """), (V.OK,), _eperm(("perf_event_open", "perf_event_open")), guards=frozenset({"seccomp"})),
    Hostile("keyctl_via_ctypes", SYSCALL + _c("""
        say('keyctl_join_session', *sc(250, 1, 0))  # KEYCTL_JOIN_SESSION_KEYRING: a new anonymous keyring
        say('keyctl_session_id', *sc(250, 0, -3, 1))  # KEYCTL_GET_KEYRING_ID of the session keyring
        """), (V.OK,), _eperm(("keyctl", "keyctl_join_session"), ("keyctl", "keyctl_session_id")),
            guards=frozenset({"seccomp"})),
    Hostile("add_key_request_key", SYSCALL + _c("""
        kind, desc, payload = cstr(b'user'), cstr(b'coderunner'), cstr(b'x')
        say('add_key', *sc(248, addr(kind), addr(desc), addr(payload), 1, -2))  # KEY_SPEC_PROCESS_KEYRING
        say('request_key', *sc(249, addr(kind), addr(desc), 0, 0))
        """), (V.OK,), _eperm(("add_key", "add_key"), ("request_key", "request_key")), guards=frozenset({"seccomp"})),
    Hostile("pidfd_getfd", SYSCALL + _c("""
        say('pidfd_getfd_self', *sc(438, os.pidfd_open(os.getpid()), 1, 0))
        try:
            parent = os.pidfd_open(os.getppid())
        except OSError as e:
            print('pidfd_open_parent', errno.errorcode[e.errno])
        else:
            say('pidfd_getfd_parent', *sc(438, parent, 0, 0))
        """), (V.OK,), _eperm(("pidfd_getfd", "pidfd_getfd_self")), guards=frozenset({"seccomp"})),
    Hostile("open_by_handle_at", SYSCALL + _c("""
        handle, mount_id, path = ctypes.create_string_buffer(8 + 128), ctypes.c_int(), cstr(b'/tmp')
        struct.pack_into('=I', handle, 0, 128)
        say('name_to_handle_at', *sc(303, -100, addr(path), addr(handle), addr(mount_id), 0))  # AT_FDCWD
        say('open_by_handle_at', *sc(304, os.open('/tmp', os.O_RDONLY), addr(handle), os.O_RDONLY))
        """), (V.OK,), _eperm(("name_to_handle_at", "name_to_handle_at"), ("open_by_handle_at", "open_by_handle_at")),
            guards=frozenset({"seccomp"})),
    Hostile("mount_via_ctypes", SYSCALL + _c("""
        none, tmp, tmpfs = cstr(b'none'), cstr(b'/tmp'), cstr(b'tmpfs')
        say('mount_tmpfs', *sc(165, addr(none), addr(tmp), addr(tmpfs), 0, 0))
        say('mount_bad_type', *sc(165, addr(none), addr(tmp), 1, 0, 0))  # the kernel alone: EFAULT
        say('umount', *sc(166, addr(tmp), 0))
        say('fsopen', *sc(430, addr(tmpfs), 0))
        """), (V.OK,), _eperm(("mount", "mount_tmpfs"), ("mount", "mount_bad_type"), ("umount2", "umount"),
                              ("fsopen", "fsopen")), guards=frozenset({"seccomp"})),
    # TIOCSTI pushes keystrokes into a terminal's input (CVE-2017-5226): refused on any descriptor.
    Hostile("tiocsti", SYSCALL + _c("""
        c = ctypes.c_char(b'x')
        say('tiocsti_stdin', *sc(16, 0, 0x5412, addr(c)))
        say('tiocsti_stdout', *sc(16, 1, 0x5412, addr(c)))
        say('tiocsti_high_bits', *sc(16, 0, 0x7FFFFFFF00005412, addr(c)))
        say('tioclinux', *sc(16, 0, 0x541C, addr(c)))
        try:
            tty = os.open('/dev/tty', os.O_RDWR)
        except OSError as e:
            print('open_tty', errno.errorcode[e.errno])
        else:
            say('tiocsti_tty', *sc(16, tty, 0x5412, addr(c)))
        """), (V.OK,), _all(_refused("tiocsti_stdin", "tiocsti_stdout", "tiocsti_high_bits", "tioclinux"),
                             _not_in("tiocsti_tty ok")), guards=frozenset({"seccomp"})),
    Hostile("x32_abi", SYSCALL + "say('x32_getpid', *sc(0x40000000 | 39))  # the kernel alone: ENOSYS or ok\n",
            (V.OK,), _refused("x32_getpid"), guards=frozenset({"seccomp"})),
]  # fmt: skip


def _eq(a: str, b: str) -> None:
    assert a == b, (a, b)


def _assert(cond: bool, what: object = None) -> None:
    assert cond, what


def _dns_contained(r: Run) -> None:
    lines = [line.split(" ", 3) for line in r.stdout.splitlines() if not line.startswith("nameserver ")]
    assert len(lines) == 5, r.stdout
    for kind, source, host, _ in lines:
        assert kind == "unresolved" or source == "files", f"{host} resolved through DNS: {r.stdout!r}"


def test_at_least_thirty_hostile_programs() -> None:
    assert len(HOSTILE) >= 30
    assert len({h.name for h in HOSTILE}) == len(HOSTILE)
    assert {g for h in HOSTILE for g in h.guards} == {"seccomp", "network"}


@pytest.mark.parametrize("hostile", HOSTILE, ids=str)
async def test_hostile_program(sandbox: PooledSandbox, hostile: Hostile, env: Env) -> None:
    r = await attempt(sandbox, hostile, env)
    verify(hostile, r, env)
    await assert_host_unaffected(sandbox)


# --- the checks are live: each fails when the protection it names is taken away ----------------


def _guarded(protection: str) -> list[Hostile]:
    return [h for h in HOSTILE if protection in h.guards]


async def _must_fail(sb: PooledSandbox, hostile: Hostile) -> str:
    with _listeners(sb) as env:
        r = await attempt(sb, hostile, env)
        try:
            if hostile.check:
                hostile.check(r, env)
            got = env.received()
            assert not got, got
        except AssertionError as exc:
            return str(exc)
    raise AssertionError(f"{hostile.name}: its check passed without the protection it names: {r.stdout[-800:]!r}")


@pytest.mark.parametrize("hostile", _guarded("seccomp"), ids=str)
async def test_check_fails_without_seccomp(without_seccomp: PooledSandbox, hostile: Hostile) -> None:
    await _must_fail(without_seccomp, hostile)


@pytest.mark.parametrize("hostile", _guarded("network"), ids=str)
async def test_check_fails_without_network_isolation(
    without_network_isolation: PooledSandbox, hostile: Hostile
) -> None:
    await _must_fail(without_network_isolation, hostile)


async def _network_mode(sb: PooledSandbox) -> None:
    """A Docker sandbox's container has NetworkMode none and is attached to no network."""
    backend = sb.backend
    assert isinstance(backend, DockerBackend)
    instance = await backend.spawn()
    try:
        info = await asyncio.to_thread(backend.api.inspect_container, instance.id)
    finally:
        await instance.destroy()
    assert info["HostConfig"]["NetworkMode"] == "none", info["HostConfig"]["NetworkMode"]
    networks = info.get("NetworkSettings", {}).get("Networks") or {}
    assert set(networks) <= {"none"}, networks


async def test_docker_network_mode_none(sandbox: PooledSandbox) -> None:
    if sandbox.name != "docker":
        pytest.skip("Docker only: bwrap's network namespace is checked by network_interfaces")
    await _network_mode(sandbox)
    await assert_host_unaffected(sandbox)


async def test_docker_network_mode_check_fails_when_bridged(without_network_isolation: PooledSandbox) -> None:
    if without_network_isolation.name != "docker":
        pytest.skip("Docker only")
    with pytest.raises(AssertionError):
        await _network_mode(without_network_isolation)


# --- test-case mode: observations only, through a channel the program cannot write to -----------


async def test_tests_mode_reports_raw_observations(sandbox: PooledSandbox) -> None:
    code = "def add(a, b):\n    return a + b\nprint('module loaded')\n"
    tests = [TestCase(id=f"t{i}", function="add", args=[i, 2 * i]) for i in range(10)]
    tests.append(TestCase(id="stdin", stdin="5\n"))
    result = await sandbox.run_tests(
        code + "import sys\nif not sys.stdin.isatty(): print(sys.stdin.read().strip())\n", tests, FAST
    )
    assert result.outcome.verdict is V.OK
    obs = {o.id: o for o in result.observations}
    for i in range(10):
        assert obs[f"t{i}"].return_json == str(3 * i)
        assert obs[f"t{i}"].stdout.startswith("module loaded\n")
    assert obs["stdin"].stdout == "module loaded\n5\n"
    await assert_host_unaffected(sandbox)


async def test_tests_mode_non_json_return_and_exceptions(sandbox: PooledSandbox) -> None:
    code = (
        "def f(kind):\n    if kind == 'set': return {1, 2}\n"
        "    if kind == 'boom': raise KeyError('k')\n    return [kind]\n"
    )
    tests = [TestCase(id=k, function="f", args=[k]) for k in ("set", "boom", "ok")]
    result = await sandbox.run_tests(code, tests, FAST)
    obs = {o.id: o for o in result.observations}
    assert obs["set"].error is not None and obs["set"].error["type"] == "NotJSON"
    assert obs["boom"].error == {"type": "KeyError", "message": "'k'", "phase": "call"}
    assert obs["ok"].return_json == '["ok"]'
    await assert_host_unaffected(sandbox)


async def test_tests_mode_script_tests_run_after_the_program(sandbox: PooledSandbox) -> None:
    code = "def double(x):\n    return x * 2\n"
    tests = [
        TestCase(id="pass", script="assert double(2) == 4"),
        TestCase(id="fail", script="x = 1\nassert double(x) == 3, 'double(1)'"),
        TestCase(id="crash", script="double(None) + 1"),
    ]
    result = await sandbox.run_tests(code, tests, FAST)
    obs = {o.id: o for o in result.observations}
    assert obs["pass"].error is None and obs["pass"].exit_code == 0
    assert obs["fail"].error == {"type": "AssertionError", "message": "double(1)", "phase": "script"}
    assert 'File "<test>", line 2' in obs["fail"].stderr  # the teacher's line, not the harness's
    assert obs["crash"].error is not None and obs["crash"].error["type"] == "TypeError"
    assert 'File "main.py", line 2, in double' in obs["crash"].stderr
    await assert_host_unaffected(sandbox)


async def test_tests_mode_cannot_be_spoofed(sandbox: PooledSandbox) -> None:
    # Each test's child tries to forge reports: straight to fd 1 (its own captured stdout), through
    # the parent's descriptors in /proc, and by killing the parent so later tests cannot report.
    code = _c("""
        import os, json, signal, sys
        fake = json.dumps({"id": "victim", "stdout": "FORGED", "returnJson": "42"}) + "\\n"
        os.write(1, fake.encode())
        for fd in ("0", "1", "2", "3"):
            try:
                with open(f"/proc/{os.getppid()}/fd/{fd}", "w") as f:
                    f.write(fake); print("WROTE PARENT FD", fd)
            except OSError:
                pass
        def answer(n):
            return n
        """)
    tests = [TestCase(id="attacker", function="answer", args=[1]), TestCase(id="victim", function="answer", args=[7])]
    result = await sandbox.run_tests(code, tests, FAST)
    obs = {o.id: o for o in result.observations}
    assert obs["victim"].return_json == "7"
    assert "WROTE PARENT FD" not in obs["attacker"].stdout
    assert obs["attacker"].stdout.startswith('{"id": "victim"')  # it stayed in the attacker's own stdout
    killer = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef answer(n):\n    return n\n"
    result = await sandbox.run_tests(killer, tests, FAST)
    returns = [o.return_json for o in result.observations]
    if result.outcome.verdict is V.OK:
        # The harness survived (it is pid 1 of the container, which ignores such signals).
        assert returns == ["1", "7"]
    else:
        # The harness died: no later test may appear to pass.
        assert returns == [None, None]
    await assert_host_unaffected(sandbox)


async def test_tests_mode_per_test_timeout(sandbox: PooledSandbox) -> None:
    code = "import time\ndef slow(s):\n    time.sleep(s)\n    return s\n"
    tests = [
        TestCase(id="fast", function="slow", args=[0], wall_ms=1000),
        TestCase(id="slow", function="slow", args=[30], wall_ms=500),
        TestCase(id="after", function="slow", args=[0], wall_ms=1000),
    ]
    result = await sandbox.run_tests(code, tests, FAST)
    obs = {o.id: o for o in result.observations}
    assert obs["fast"].return_json == "0" and not obs["fast"].timed_out
    assert obs["slow"].timed_out and obs["slow"].return_json is None
    assert obs["after"].return_json == "0"
    await assert_host_unaffected(sandbox)
