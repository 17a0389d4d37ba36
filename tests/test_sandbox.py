"""Ordinary programs behave as under a plain `python3`, on every backend, and the pool works."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sandbox.base import TestCase
from sandbox.pool import PooledSandbox
from schemas.executions import Verdict as V
from tests.sandboxes import BACKENDS, FAST, make_sandbox, run


@pytest.fixture(scope="module", params=BACKENDS)
async def sandbox(request: pytest.FixtureRequest) -> AsyncIterator[PooledSandbox]:
    sb = await make_sandbox(request.param, min_size=2, max_size=3)
    yield sb
    await sb.close()


async def test_stdin_and_output_order(sandbox: PooledSandbox) -> None:
    r = await run(sandbox, "name = input()\nprint(f'hello {name}')\nprint(input())", stdin="Ada\nLovelace\n")
    assert r.outcome.verdict is V.OK and r.outcome.exit_code == 0
    assert r.stdout == "hello Ada\nLovelace\n"


async def test_traceback_shows_the_students_lines_only(sandbox: PooledSandbox) -> None:
    r = await run(sandbox, "def f():\n    raise ValueError('boom')\n\nf()\n")
    assert r.outcome.verdict is V.RUNTIME_ERROR and r.outcome.exit_code == 1
    assert 'File "main.py", line 4, in <module>' in r.stderr
    assert "raise ValueError('boom')" in r.stderr
    assert "harness" not in r.stderr and "<string>" not in r.stderr


async def test_syntax_error(sandbox: PooledSandbox) -> None:
    r = await run(sandbox, "print('x'\n")
    assert r.outcome.verdict is V.RUNTIME_ERROR
    assert "SyntaxError" in r.stderr


@pytest.mark.parametrize(
    ("code", "exit_code", "stderr"),
    [
        ("import sys\nsys.exit(3)", 3, ""),
        ("import sys\nsys.exit('bye')", 1, "bye\n"),
        ("import sys\nsys.exit()", 0, ""),
        ("raise SystemExit(None)", 0, ""),
    ],
)
async def test_exit_codes(sandbox: PooledSandbox, code: str, exit_code: int, stderr: str) -> None:
    r = await run(sandbox, code)
    assert r.outcome.exit_code == exit_code
    assert r.stderr == stderr


async def test_threads_and_atexit_finish_before_exit(sandbox: PooledSandbox) -> None:
    code = (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "def work():\n    time.sleep(0.2)\n    print('thread done', flush=True)\n"
        "threading.Thread(target=work).start()\nprint('main done')\n"
    )
    r = await run(sandbox, code)
    assert r.outcome.verdict is V.OK
    assert r.stdout == "main done\nthread done\natexit ran\n"


async def test_output_streams_live(sandbox: PooledSandbox) -> None:
    import time

    from sandbox.base import Execution

    arrivals: list[tuple[float, str]] = []

    async def sink(stream: str, text: str) -> None:
        arrivals.append((time.monotonic(), text))

    code = "import time\nprint('a')\ntime.sleep(0.8)\nprint('b')"
    await sandbox.run(Execution(code=code, limits=FAST), sink)
    # Chunks may be split anywhere; what matters is that 'a' arrived well before 'b'.
    assert "".join(text for _, text in arrivals) == "a\nb\n"
    got_a = next(t for t, text in arrivals if "a" in text)
    got_b = next(t for t, text in arrivals if "b" in text)
    assert got_b - got_a > 0.5


async def test_tests_mode_syntax_error_reports_every_test(sandbox: PooledSandbox) -> None:
    result = await sandbox.run_tests("def f(:\n", [TestCase(id="a"), TestCase(id="b")], FAST)
    assert [o.error["type"] if o.error else None for o in result.observations] == ["SyntaxError"] * 2
    assert result.outcome.verdict is V.OK


async def test_each_job_gets_a_fresh_sandbox(sandbox: PooledSandbox) -> None:
    # A file left in /tmp by one student is never seen by the next.
    first = await run(sandbox, "open('/tmp/left-behind', 'w').write('secret'); print('written')")
    assert first.stdout == "written\n"
    second = await run(sandbox, "import os\nprint(os.path.exists('/tmp/left-behind'))")
    assert second.stdout == "False\n"


async def test_pool_serves_warm_sandboxes_and_never_reuses_one(sandbox: PooledSandbox) -> None:
    await sandbox.pool.settle()
    await sandbox.pool.wait_warm()
    before = sandbox.stats()
    for _ in range(3):
        await sandbox.pool.wait_warm()
        assert (await run(sandbox, "print(1)")).stdout == "1\n"
    await sandbox.pool.settle()
    after = sandbox.stats()
    assert after.warm_hits - before.warm_hits == 3
    assert after.cold_starts == before.cold_starts
    assert after.destroyed - before.destroyed >= 3
    assert after.idle >= 1 and after.busy == 0
