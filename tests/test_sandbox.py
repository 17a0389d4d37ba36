"""The bwrap sandbox against real hostile programs: each gets its verdict, and the host is unaffected."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass, field

import pytest

from sandbox.base import Execution, Outcome
from sandbox.bwrap import BwrapSandbox
from schemas.executions import Verdict
from schemas.submissions import Limits

FAST = Limits(wall_time_ms=2000, cpu_time_ms=1500)


@dataclass
class Run:
    outcome: Outcome
    chunks: list[tuple[str, str]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(t for s, t in self.chunks if s == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(t for s, t in self.chunks if s == "stderr")


@pytest.fixture(scope="module")
async def sandbox() -> BwrapSandbox:
    sb = BwrapSandbox(slots=2)
    await sb.check()
    return sb


async def run(sb: BwrapSandbox, code: str, *, stdin: str = "", limits: Limits = FAST) -> Run:
    result = Run(outcome=None)  # type: ignore[arg-type]

    async def sink(stream: str, text: str) -> None:
        result.chunks.append((stream, text))

    result.outcome = await sb.run(Execution(code=code, stdin=stdin, limits=limits), sink)
    return result


def no_sandbox_left() -> bool:
    return subprocess.run(["pgrep", "-f", "/code/main.py"], capture_output=True).returncode != 0


@pytest.fixture(autouse=True)
def host_unaffected():
    yield
    assert no_sandbox_left(), "a sandboxed process outlived its job"


async def test_hello_and_stdin(sandbox: BwrapSandbox) -> None:
    r = await run(sandbox, "name = input()\nprint(f'hello {name}')", stdin="Ada\n")
    assert r.outcome.verdict is Verdict.OK and r.outcome.exit_code == 0
    assert r.stdout == "hello Ada\n"


async def test_runtime_error(sandbox: BwrapSandbox) -> None:
    r = await run(sandbox, "raise ValueError('boom')")
    assert r.outcome.verdict is Verdict.RUNTIME_ERROR and r.outcome.exit_code == 1
    assert 'File "/code/main.py", line 1' in r.stderr and "ValueError: boom" in r.stderr


async def test_sleep_forever_is_time_limit(sandbox: BwrapSandbox) -> None:
    r = await run(sandbox, "import time\ntime.sleep(3600)")
    assert r.outcome.verdict is Verdict.TIME_LIMIT
    assert 1900 <= r.outcome.duration_ms < 4000


async def test_cpu_spin_is_time_limit(sandbox: BwrapSandbox) -> None:
    r = await run(sandbox, "while True: pass")
    assert r.outcome.verdict is Verdict.TIME_LIMIT


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_endless_output_is_capped(sandbox: BwrapSandbox, stream: str) -> None:
    r = await run(sandbox, f"import sys\nwhile True: sys.{stream}.write('x' * 1000)")
    assert r.outcome.verdict is Verdict.OUTPUT_LIMIT
    assert getattr(r.outcome, f"{stream}_truncated")
    assert len(getattr(r, stream)) == FAST.output_bytes


async def test_huge_line_without_newline_is_capped(sandbox: BwrapSandbox) -> None:
    r = await run(sandbox, "import sys\nsys.stdout.write('y' * 10_000_000)")
    assert r.outcome.verdict is Verdict.OUTPUT_LIMIT
    assert len(r.stdout) == FAST.output_bytes


async def test_memory_bomb_is_memory_limit(sandbox: BwrapSandbox) -> None:
    r = await run(sandbox, "x = bytearray(512 * 1024 * 1024)")
    assert r.outcome.verdict is Verdict.MEMORY_LIMIT


async def test_fork_bomb_is_contained(sandbox: BwrapSandbox) -> None:
    code = "import os\nn = 0\nwhile True:\n    try:\n        os.fork(); n += 1\n    except OSError:\n        break"
    r = await run(sandbox, code)
    assert r.outcome.verdict in (Verdict.OK, Verdict.TIME_LIMIT, Verdict.RUNTIME_ERROR)
    # The host can still start processes afterwards.
    assert (await run(sandbox, "print('alive')")).stdout == "alive\n"


async def test_invalid_utf8_nul_and_ansi_are_decoded_leniently(sandbox: BwrapSandbox) -> None:
    r = await run(sandbox, r"import sys; sys.stdout.buffer.write(b'ok\xff\xfe\x00\x1b[31mred\n')")
    assert r.outcome.verdict is Verdict.OK
    assert r.stdout == "ok\ufffd\ufffd\x00\x1b[31mred\n"


async def test_no_network_even_to_host_services(sandbox: BwrapSandbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        code = (
            "import socket\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1); print('CONNECTED')\n"
            "except OSError as e:\n    print('blocked', type(e).__name__)\n"
            "try:\n    socket.getaddrinfo('example.com', 80); print('RESOLVED')\n"
            "except OSError:\n    print('no dns')\n"
        )
        r = await run(sandbox, code)
    finally:
        listener.close()
    assert "CONNECTED" not in r.stdout and "RESOLVED" not in r.stdout
    assert "blocked" in r.stdout and "no dns" in r.stdout


async def test_root_is_read_only_and_tmp_is_private(sandbox: BwrapSandbox, tmp_path) -> None:
    marker = tmp_path / "host-file"
    code = (
        "import os\n"
        "for p in ['/usr/evil', '/evil', '/code/main.py']:\n"
        "    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n"
        "    except OSError:\n        print('denied', p)\n"
        "open('/tmp/scratch', 'w').write('fine'); print(open('/tmp/scratch').read())\n"
        f"print(os.path.exists({str(marker)!r}), os.getuid())\n"
    )
    marker.write_text("secret")
    r = await run(sandbox, code)
    assert "WROTE" not in r.stdout
    assert r.stdout.count("denied") == 3
    assert "fine\n" in r.stdout
    assert r.stdout.endswith("False 1000\n")  # host folders are not visible; not root


async def test_secrets_and_host_files_are_not_visible(sandbox: BwrapSandbox) -> None:
    os.environ["CODERUNNER_TEST_SECRET"] = "hunter2-very-secret"
    try:
        code = (
            "import os\nprint(sorted(os.environ))\n"
            "for p in ['/etc/shadow', '/etc/passwd', '/proc/1/environ', '/root']:\n"
            "    try:\n        open(p).read(); print('READ', p)\n"
            "    except OSError:\n        print('denied', p)\n"
        )
        r = await run(sandbox, code)
    finally:
        del os.environ["CODERUNNER_TEST_SECRET"]
    assert "hunter2" not in r.stdout
    assert "NATS_URL" not in r.stdout
    assert "READ /etc/shadow" not in r.stdout and "READ /root" not in r.stdout


async def test_background_process_does_not_outlive_the_program(sandbox: BwrapSandbox) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "print('parent exits')\n"
    )
    r = await run(sandbox, code)
    assert r.outcome.verdict is Verdict.OK and r.stdout == "parent exits\n"
    # host_unaffected (autouse) checks that no sandboxed process remains.


async def test_timeout_while_children_hold_the_pipes(sandbox: BwrapSandbox) -> None:
    code = "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        time.sleep(60)\ntime.sleep(60)"
    r = await run(sandbox, code)
    assert r.outcome.verdict is Verdict.TIME_LIMIT
    assert r.outcome.duration_ms < 5000


async def test_faking_a_status_line_changes_nothing(sandbox: BwrapSandbox) -> None:
    code = "import sys\nprint('{ \"exit-code\": 0 }')\nprint('{ \"child-pid\": 1 }', file=sys.stderr)\nsys.exit(7)"
    r = await run(sandbox, code)
    assert r.outcome.verdict is Verdict.RUNTIME_ERROR and r.outcome.exit_code == 7
