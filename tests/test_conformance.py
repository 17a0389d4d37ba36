"""Hostile-program conformance suite, run against every sandbox backend.

Each program must get its verdict, and afterwards the host must be unaffected: no sandbox process
or container left beyond the warm pool, nothing written outside the sandbox, no connection made,
and the next job runs normally.
"""

from __future__ import annotations

import asyncio
import os
import socket
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from sandbox.base import TestCase
from sandbox.bwrap import BwrapBackend
from sandbox.docker import DockerBackend
from sandbox.executor import READY
from sandbox.pool import PooledSandbox
from schemas.executions import Verdict as V
from schemas.submissions import Limits
from tests.sandboxes import BACKENDS, FAST, Run, make_sandbox, processes_of_uids, run

SECRET = "hunter2-conformance-secret"


@pytest.fixture(scope="module", params=BACKENDS)
async def sandbox(request: pytest.FixtureRequest) -> AsyncIterator[PooledSandbox]:
    os.environ["CODERUNNER_TEST_SECRET"] = SECRET  # must never be visible inside
    sb = await make_sandbox(request.param)
    yield sb
    await sb.close()


@pytest.fixture(scope="module")
def host_port() -> AsyncIterator[tuple[socket.socket, socket.socket, int, int]]:
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.settimeout(0.2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    yield tcp, udp, tcp.getsockname()[1], udp.getsockname()[1]  # type: ignore[misc]
    tcp.close()
    udp.close()


async def _leftovers(sb: PooledSandbox) -> list[str]:
    """Sandbox processes or containers that are not part of an idle warm sandbox."""
    await sb.pool.settle()
    idle = sb.pool.idle_instances()
    backend = sb.backend
    problems: list[str] = []
    if isinstance(backend, BwrapBackend):
        base = backend.config.host_uid_base
        procs = processes_of_uids(range(base, base + backend.config.host_uids))
        roots = {inst.proc.pid for inst in idle}  # type: ignore[attr-defined]
        for pid in procs:
            p = pid
            while p not in roots and p in procs:
                p = procs[p]
            if p not in roots:
                problems.append(f"process {pid}")
    elif isinstance(backend, DockerBackend):
        containers = await asyncio.to_thread(
            backend.api.containers, all=True, filters={"label": "coderunner.runner=tests"}
        )
        idle_ids = {inst.id for inst in idle}  # type: ignore[attr-defined]
        problems += [f"container {c['Id'][:12]} {c['State']}" for c in containers if c["Id"] not in idle_ids]
    return problems


async def assert_host_unaffected(sb: PooledSandbox) -> None:
    # Killed processes take a moment to be reaped and a refill may be starting: poll, don't sleep.
    deadline = asyncio.get_running_loop().time() + 10
    while problems := await _leftovers(sb):
        assert asyncio.get_running_loop().time() < deadline, f"outlived their job: {problems}"
        await asyncio.sleep(0.05)
    # The next job runs normally.
    after = await run(sb, "print('next job fine')")
    assert after.outcome.verdict is V.OK, after
    assert after.stdout == "next job fine\n"


@dataclass(frozen=True)
class Hostile:
    name: str
    code: str
    verdicts: tuple[V, ...]
    check: Callable[[Run], None] | None = None
    stdin: str = ""
    limits: Limits = FAST
    marks: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.name


def _c(src: str) -> str:
    return textwrap.dedent(src).strip() + "\n"


def _in(*needles: str) -> Callable[[Run], None]:
    def check(r: Run) -> None:
        for needle in needles:
            assert needle in r.stdout, f"{needle!r} not in {r.stdout!r}"

    return check


def _not_in(*needles: str) -> Callable[[Run], None]:
    def check(r: Run) -> None:
        for needle in needles:
            assert needle not in r.stdout + r.stderr, f"{needle!r} leaked: {r.stdout[:500]!r}"

    return check


def _all(*checks: Callable[[Run], None]) -> Callable[[Run], None]:
    def check(r: Run) -> None:
        for c in checks:
            c(r)

    return check


def _truncated(stream: str) -> Callable[[Run], None]:
    def check(r: Run) -> None:
        assert getattr(r.outcome, f"{stream}_truncated")
        assert len(getattr(r, stream).encode()) <= FAST.output_bytes

    return check


def _fast(max_ms: int) -> Callable[[Run], None]:
    def check(r: Run) -> None:
        assert r.outcome.duration_ms < max_ms, r.outcome

    return check


SYSCALL = _c(
    """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    def call(name, *args):
        r = getattr(libc, name)(*args)
        print(name, "ok" if r == 0 else "denied", os.strerror(ctypes.get_errno()) if r != 0 else "")
    """
)

HOSTILE = [
    Hostile("fork_bomb", _c("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """), (V.TIME_LIMIT, V.RUNTIME_ERROR, V.OK)),
    Hostile("thread_bomb", _c("""
        import threading, time
        n = 0
        try:
            while True:
                threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); n += 1
        except (RuntimeError, MemoryError) as e:
            print("stopped after", n, type(e).__name__)
        """), (V.OK, V.TIME_LIMIT, V.MEMORY_LIMIT, V.RUNTIME_ERROR)),
    Hostile("memory_bomb", "a = []\nwhile True:\n    a.append(' ' * 10**7)\n", (V.MEMORY_LIMIT,)),
    Hostile("slow_leak", _c("""
        import time
        a = []
        while True:
            a.append(bytearray(b'x' * 2_000_000)); time.sleep(0.002)
        """), (V.MEMORY_LIMIT,)),
    Hostile("cpu_spin", "while True:\n    pass\n", (V.TIME_LIMIT,), _fast(4500)),
    Hostile("sleep_forever", "import time\ntime.sleep(10**6)\n", (V.TIME_LIMIT,), _fast(4500)),
    Hostile("endless_stdout", "while True:\n    print('spam' * 100)\n", (V.OUTPUT_LIMIT,), _truncated("stdout")),
    Hostile("endless_stderr", "import sys\nwhile True:\n    sys.stderr.write('e' * 999)\n", (V.OUTPUT_LIMIT,),
            _truncated("stderr")),
    Hostile("ten_mb_line", "import sys\nsys.stdout.write('y' * 10_000_000)\n", (V.OUTPUT_LIMIT,),
            _truncated("stdout")),
    Hostile("invalid_utf8_nul_ansi", "import sys\nsys.stdout.buffer.write(b'ok\\xff\\xfe\\x00\\x1b[31mred\\n')\n",
            (V.OK,), lambda r: _eq(r.stdout, "ok\ufffd\ufffd\x00\x1b[31mred\n")),
    Hostile("fill_tmp", _c("""
        n = 0
        try:
            with open('/tmp/fill', 'wb') as f:
                while True:
                    f.write(b'\\0' * 1_000_000); f.flush(); n += 1
        except OSError as e:
            print('stopped at', n, 'MB', e.errno)
        """), (V.OK, V.MEMORY_LIMIT, V.RUNTIME_ERROR), lambda r: _tmp_capped(r)),
    Hostile("many_small_files", _c("""
        import os
        n = 0
        try:
            while n < 200_000:
                open(f'/tmp/f{n}', 'w').close(); n += 1
        except OSError as e:
            print('stopped', n, e.errno)
        print('made', n)
        """), (V.OK, V.TIME_LIMIT, V.MEMORY_LIMIT)),
    Hostile("write_outside_tmp", _c("""
        for p in ['/escape', '/usr/escape', '/etc/escape', '/home/escape', '/root/escape', '/var/escape']:
            try:
                open(p, 'w').write('x'); print('WROTE', p)
            except OSError:
                print('denied', p)
        """), (V.OK,), _all(_not_in("WROTE"), _in("denied /escape"))),
    Hostile("read_shadow", _c("""
        for p in ['/etc/shadow', '/etc/gshadow', '/root/.bashrc']:
            try:
                open(p).read(); print('READ', p)
            except OSError:
                print('denied', p)
        """), (V.OK,), _not_in("READ")),
    Hostile("proc_environ_and_environment", _c("""
        import os
        print(dict(os.environ))
        for pid in ['1', 'self', str(os.getppid())]:
            try:
                print(open(f'/proc/{pid}/environ', 'rb').read())
            except OSError as e:
                print('denied', pid)
        """), (V.OK,), _not_in(SECRET, "NATS_URL", "DOCKER_HOST", "CODERUNNER_TEST_SECRET")),
    Hostile("tcp_to_host", "", (V.OK,), _all(_in("blocked"), _not_in("CONNECTED"))),
    Hostile("udp_to_host", "", (V.OK,), _not_in("SENT-OK-BUT")),
    Hostile("dns_lookup", _c("""
        import socket
        for host in ['example.com', 'localhost.localdomain', 'nats']:
            try:
                print('RESOLVED', socket.getaddrinfo(host, 80)[0][4])
            except OSError:
                print('no dns', host)
        """), (V.OK,), _not_in("RESOLVED ('9", "RESOLVED ('1")),
    Hostile("connect_platform_ports", _c("""
        import socket
        for port in [4222, 6379, 27017, 8000, 8222, 2375, 2376]:
            for host in ['127.0.0.1', '10.0.0.1', '172.17.0.1', '192.168.1.1']:
                try:
                    socket.create_connection((host, port), timeout=0.2); print('CONNECTED', host, port)
                except OSError:
                    pass
        print('done')
        """), (V.OK,), _all(_in("done"), _not_in("CONNECTED"))),
    Hostile("docker_socket_search", _c("""
        import os
        found = []
        for p in ['/var/run/docker.sock', '/run/docker.sock', '/run/podman/podman.sock',
                  '/run/coderunner-podman.sock', '/var/run/podman/podman.sock',
                  '/run/containerd/containerd.sock']:
            if os.path.exists(p):
                found.append(p)
        print('found', found)
        """), (V.OK,), _in("found []")),
    Hostile("ptrace_parent", SYSCALL + "call('ptrace', 16, os.getppid() or 1, 0, 0)\n", (V.OK,), _in("denied")),
    Hostile("process_vm_readv_parent", SYSCALL + _c("""
        import ctypes
        buf = ctypes.create_string_buffer(64)
        class iovec(ctypes.Structure):
            _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
        local = iovec(ctypes.addressof(buf), 64); remote = iovec(0x400000, 64)
        r = libc.process_vm_readv(os.getppid() or 1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        print('readv', 'ok' if r > 0 else 'denied')
        """), (V.OK,), _in("readv denied")),
    Hostile("signal_parent",
            "import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\nexcept OSError:\n    pass\n"
            "print('still here')\n", (V.OK, V.RUNTIME_ERROR, V.MEMORY_LIMIT)),
    Hostile("kill_everything", "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('survived')\n",
            (V.RUNTIME_ERROR, V.MEMORY_LIMIT, V.OK)),
    Hostile("unshare_via_ctypes", SYSCALL + "call('unshare', 0x10000000)\ncall('unshare', 0x00020000)\n", (V.OK,),
            _not_in(" ok ")),
    Hostile("mount_via_ctypes", SYSCALL + "call('mount', b'none', b'/tmp', b'tmpfs', 0, None)\n", (V.OK,),
            _in("mount denied")),
    Hostile("keyctl_via_ctypes", SYSCALL + "r = libc.syscall(250, 0, 0, 0, 0)\nprint('keyctl', r)\n", (V.OK,),
            _in("keyctl -1")),
    Hostile("setuid_tricks", _c("""
        import os
        for f in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.seteuid(0)):
            try:
                f(); print('BECAME ROOT')
            except OSError:
                print('denied')
        for exe in ['/usr/bin/su', '/usr/bin/passwd', '/usr/bin/mount', '/bin/sh']:
            try:
                os.execv(exe, [exe]); print('EXECUTED', exe)
            except OSError as e:
                print('no exec', exe, e.errno)
        print(os.getuid(), os.geteuid())
        """), (V.OK,), _all(_not_in("BECAME ROOT", "EXECUTED"), _in("1000 1000"))),
    Hostile("plant_symlinks_and_hardlinks", _c("""
        import os
        for target in ['/etc/passwd', '/etc/shadow', '/proc/self/environ', '/']:
            for name in ['/tmp/result.json', '/tmp/out', '/tmp/stdout']:
                try:
                    os.symlink(target, name + str(abs(hash(target))))
                except OSError:
                    pass
        try:
            os.link('/etc/passwd', '/tmp/hard')
            print('hardlinked')
        except OSError:
            print('no hardlink')
        print('planted')
        """), (V.OK,), _in("planted")),
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
        """), (V.TIME_LIMIT,), _fast(4500)),
    Hostile("zombies", _c("""
        import os
        n = 0
        for _ in range(30):
            try:
                if os.fork() == 0:
                    os._exit(0)
                n += 1
            except OSError:
                break
        print('zombies', n)
        """), (V.OK,), _in("zombies")),
    Hostile("exhaust_fds", _c("""
        import os
        fds = []
        try:
            while True:
                fds.append(os.open('/dev/null', os.O_RDONLY))
        except OSError as e:
            print('stopped at', len(fds), e.errno)
        """), (V.OK,), lambda r: _assert(int(r.stdout.split()[2]) <= FAST.open_files)),
    Hostile("fake_result_markers", _c(f"""
        import os, sys
        os.write(1, {READY!r})
        print('{{"exit-code": 0}}')
        print('{{"child-pid": 1}}', file=sys.stderr)
        print('{{"done": true}}')
        sys.exit(7)
        """), (V.RUNTIME_ERROR,), lambda r: _assert(r.outcome.exit_code == 7)),
    Hostile("deep_recursion_segfault", "import sys\nsys.setrecursionlimit(10**9)\ndef f(n): return f(n + 1)\nf(0)\n",
            (V.RUNTIME_ERROR, V.MEMORY_LIMIT)),
    Hostile("huge_stdin_echo", "import sys\ndata = sys.stdin.read()\nprint(len(data))\n", (V.OK,),
            _in("2000000"), stdin="z" * 2_000_000),
    Hostile("dev_and_proc_probing", _c("""
        import os
        print(sorted(os.listdir('/dev')))
        for p in ['/dev/mem', '/dev/kmsg', '/proc/kcore', '/sys/kernel']:
            print(p, os.path.exists(p))
        try:
            open('/proc/sysrq-trigger', 'w').write('b'); print('SYSRQ')
        except OSError:
            print('no sysrq')
        """), (V.OK,), _all(_in("/dev/mem False", "no sysrq"), _not_in("SYSRQ"))),
]  # fmt: skip


def _eq(a: str, b: str) -> None:
    assert a == b, (a, b)


def _assert(cond: bool) -> None:
    assert cond


def _tmp_capped(r: Run) -> None:
    if "stopped at" in r.stdout:
        assert int(r.stdout.split()[2]) <= 60, r.stdout


def test_at_least_thirty_hostile_programs() -> None:
    assert len(HOSTILE) >= 30
    assert len({h.name for h in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize("hostile", HOSTILE, ids=str)
async def test_hostile_program(sandbox: PooledSandbox, hostile: Hostile, host_port) -> None:  # type: ignore[no-untyped-def]
    tcp, udp, tcp_port, udp_port = host_port
    code = hostile.code
    if hostile.name == "tcp_to_host":
        code = _c(f"""
            import socket
            for host in ['127.0.0.1', 'localhost', '::1']:
                try:
                    socket.create_connection((host, {tcp_port}), timeout=1); print('CONNECTED', host)
                except OSError:
                    print('blocked', host)
            """)
    elif hostile.name == "udp_to_host":
        code = _c(f"""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(b'escape', ('127.0.0.1', {udp_port})); print('sent')
            except OSError:
                print('blocked')
            """)
    r = await run(sandbox, code, stdin=hostile.stdin, limits=hostile.limits)
    assert r.outcome.verdict in hostile.verdicts, (r.outcome, r.stdout[:300], r.stderr[-500:])
    if hostile.check:
        hostile.check(r)
    # Nothing reached the host's sockets.
    with pytest.raises(TimeoutError):
        tcp.accept()
    with pytest.raises(TimeoutError):
        udp.recvfrom(100)
    assert not os.path.exists("/escape")  # noqa: ASYNC240 - one stat, on purpose
    await assert_host_unaffected(sandbox)


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
    assert obs["boom"].error == {"type": "KeyError", "message": "'k'"}
    assert obs["ok"].return_json == '["ok"]'
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
        if os.environ.get("NEVER") is None and len(sys.argv) == 1 and os.path.exists("/proc/self"):
            pass
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
