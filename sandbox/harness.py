"""The in-sandbox harness. Runs as ``python3 -I -S -u -c <this file's source>`` inside a sandbox.

It starts before any job is known (that is what makes a warm sandbox warm), says it is ready, then
reads exactly one job from stdin: ``<length>\\n<json>``; whatever follows on stdin is the
program's own input. It uses the standard library only and imports nothing from Code Runner.

Modes:

- ``run``: the program runs in this process, with this process's stdin/stdout/stderr, so output
  streams live. How it ended is observed by the host (exit status), not reported from in here.
- ``tests``: each test case runs in a forked child whose stdin, stdout and stderr are pipes owned by
  this (parent) process; the child never holds the real stdout, and this process makes itself
  non-dumpable so the child cannot reach its descriptors through /proc or ptrace. The real stdout
  therefore carries only this process's JSON lines: one observation per test (stdout, stderr,
  return value as JSON, exception type and message, time), then ``{"done": true}``. Expected
  outputs never come here; the host compares.

Before any user code runs, resource limits are lowered to the job's and a seccomp filter forbids
exec and the kernel interfaces a student never needs (see ``sandbox/seccomp.py``, which builds
the same program as the host-side filter; the BPF bytes arrive in the job as hex).
"""

import builtins
import ctypes
import json
import linecache
import os
import resource
import select
import signal
import sys
import time
import traceback
import types

READY = b"\x00coderunner-harness-ready\n"
FILENAME = "main.py"
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def read_exact(n):
    chunks = []
    while n > 0:
        chunk = os.read(0, n)
        if not chunk:
            raise EOFError("stdin closed before the job arrived")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_job():
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte or len(header) > 20:
            raise EOFError("no job header")
        header += byte
    return json.loads(read_exact(int(header)))


def lower_limits(limits):
    pairs = [
        (resource.RLIMIT_CPU, limits.get("cpuSeconds")),
        (resource.RLIMIT_FSIZE, limits.get("fileSizeBytes")),
        (resource.RLIMIT_NOFILE, limits.get("openFiles")),
        (resource.RLIMIT_CORE, 0),
    ]
    for which, value in pairs:
        if value is None:
            continue
        soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def install_seccomp(program_hex):
    if not program_hex:
        return
    program = bytes.fromhex(program_hex)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_char_p))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def set_dumpable(flag):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl(PR_SET_DUMPABLE, flag, 0, 0, 0)


def compile_program(code):
    """Compile the program so that its tracebacks show its own lines."""
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)
    return compile(code, FILENAME, "exec", dont_inherit=True)


def fresh_main(code):
    """The compiled program and a fresh ``__main__`` module to run it in."""
    compiled = compile_program(code) if isinstance(code, str) else code
    module = types.ModuleType("__main__")
    module.__file__ = FILENAME
    setattr(module, "__builtins__", builtins)  # noqa: B010 - ModuleType has no such attribute
    sys.modules["__main__"] = module
    sys.argv = [FILENAME]
    return compiled, module


def print_user_traceback(exc):
    # Drop the harness's own frames: the student sees only their program.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != FILENAME:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def run_program(job):
    compiled, module = fresh_main(job["code"])
    lower_limits(job.get("limits", {}))
    install_seccomp(job.get("seccomp"))
    del job
    code: object = 0
    try:
        exec(compiled, module.__dict__)
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:
        print_user_traceback(exc)
        code = 1
    finish(code)


def finish(code):
    """Exit as the interpreter would, minus tearing down every module (a few ms per job)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    elif not isinstance(code, int):
        code = 0 if code is None else 1
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()  # join non-daemon threads, as a normal exit does
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = code or 120  # as CPython does when flushing stdout fails at exit
    os._exit(code & 0xFF)


def _child(job, tests, test, out_w, err_w, res_w, in_r):
    # Forget every other test case before user code runs (this is the child's copy of memory).
    tests.clear()
    job.clear()
    os.setpgid(0, 0)
    os.dup2(in_r, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, res_w)
    os.closerange(res_w + 1, 65536)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    result: dict = {"return": None, "error": None}
    try:
        compiled, module = fresh_main(test.pop("compiled"))
        lower_limits(test["limits"])
        install_seccomp(test["seccomp"])
        exec(compiled, module.__dict__)
        if test.get("function"):
            value = module.__dict__[test["function"]](*test.get("args", []))
            try:
                result["return"] = json.dumps(value)
            except (TypeError, ValueError) as exc:
                result["error"] = {"type": "NotJSON", "message": "return value is not JSON: " + str(exc)[:200]}
    except SystemExit as exc:
        result["exit"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        result["error"] = {"type": type(exc).__name__, "message": str(exc)[:1000]}
        print_user_traceback(exc)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(res_w, json.dumps(result).encode()[:1_000_000])
    finally:
        os._exit(0)


def report_syntax_error(tests, exc):
    text = "".join(traceback.format_exception_only(type(exc), exc))
    for test in tests:
        observation = {"id": test.get("id"), "stderr": text, "error": {"type": "SyntaxError", "message": str(exc)}}
        sys.stdout.write(json.dumps(observation) + "\n")
    sys.stdout.write(json.dumps({"done": True}) + "\n")
    sys.stdout.flush()


def exit_status(status):
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None


def run_tests(job):
    set_dumpable(0)
    cap = int(job.get("outputBytes", 65536))
    tests = job.pop("tests")
    observation = None
    try:
        compiled = compile_program(job["code"])  # once; each child runs it in a fresh module
    except SyntaxError as exc:
        report_syntax_error(tests, exc)
        return
    for index in range(len(tests)):
        observation = None
        limits = dict(job.get("limits", {}))
        if tests[index].get("cpuSeconds"):
            limits["cpuSeconds"] = tests[index]["cpuSeconds"]
        test = dict(tests[index], compiled=compiled, limits=limits, seccomp=job.get("seccomp"))
        pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, result, stdin
        (out_r, out_w), (err_r, err_w), (res_r, res_w), (in_r, in_w) = pipes
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            for fd in (out_r, err_r, res_r, in_w):
                os.close(fd)
            _child(job, tests, test, out_w, err_w, res_w, in_r)
        for fd in (out_w, err_w, res_w, in_r):
            os.close(fd)
        stdin = test.get("stdin", "").encode("utf-8", "replace")
        try:
            os.write(in_w, stdin[:65536])
        except OSError:
            pass
        os.close(in_w)
        buffers = {out_r: b"", err_r: b"", res_r: b""}
        truncated = False
        deadline = started + test.get("wallMs", 5000) / 1000
        timed_out = False
        open_fds = set(buffers)
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select(list(open_fds), [], [], remaining)
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    open_fds.discard(fd)
                    continue
                limit = 1_000_000 if fd == res_r else cap
                room = limit - len(buffers[fd])
                if len(data) > room:
                    truncated = truncated or fd != res_r
                    data = data[: max(room, 0)]
                buffers[fd] += data
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        _, status = os.waitpid(pid, 0)
        for fd in buffers:
            os.close(fd)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        try:
            result = json.loads(buffers[res_r] or b"{}")
        except ValueError:
            result = {}
        observation = {
            "id": test.get("id"),
            "stdout": buffers[out_r].decode("utf-8", "replace"),
            "stderr": buffers[err_r].decode("utf-8", "replace"),
            "returnJson": result.get("return"),
            "error": result.get("error"),
            "exitCode": result["exit"] if "exit" in result else exit_status(status),
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) and not timed_out else None,
            "timedOut": timed_out,
            "outputTruncated": truncated,
            "timeMs": elapsed_ms,
        }
        sys.stdout.write(json.dumps(observation) + "\n")
        sys.stdout.flush()
    sys.stdout.write(json.dumps({"done": True}) + "\n")
    sys.stdout.flush()


def main():
    os.write(1, READY)
    try:
        job = read_job()
    except (EOFError, ValueError):
        os._exit(0)  # released from the pool without a job
    if job.get("mode") == "tests":
        run_tests(job)
        finish(0)
    else:
        run_program(job)


main()
