"""The in-sandbox harness. Runs as ``python3 -I -S -u -c <this file's source>`` inside a sandbox.

It starts before any job is known (that is what makes a warm sandbox warm), says it is ready, then
reads exactly one job from stdin: ``<length>\\n<json>``; whatever follows on stdin is the
program's own input. It uses the standard library only and imports nothing from Code Runner.

The harness is the sandbox's init: pid 1 of its pid namespace on both backends (bwrap
``--as-pid-1``; a container's command), so every process of the job is its descendant, orphans
come back to it, and no program in the namespace can signal it (pid 1 gets only the signals it
has a handler for). It never runs user code itself: it forks the program and supervises it.

Modes:

- ``run``: the program runs in a forked child, with the sandbox's stdin/stdout/stderr, so output
  streams live. The harness watches it and exits with the program's status (128 + signal when it
  was killed), which the host learns from the backend, never from anything printed.
- ``tests``: each test case runs in a forked child whose stdin, stdout and stderr are pipes owned by
  this (parent) process; the child never holds the real stdout. The real stdout carries only this
  process's JSON lines: one observation per test (stdout, stderr, return value as JSON, exception
  type and message, time), then ``{"done": true}``. Expected outputs never come here; the host
  compares. When a test's process ends (or its time runs out) every other process is killed, and
  /tmp, /dev/shm and System V IPC are emptied, so the next test starts from a clean sandbox.

Supervision (both modes): the CPU time of every process of the job counts against one budget
(``cpuMs``), read from /proc and, where the sandbox sees its own cgroup, from the cgroup's CPU
counter; when it is spent everything is killed and the job ends as if by SIGXCPU (exit 152; in
tests mode the observation's signal is SIGXCPU). Each process also has RLIMIT_CPU (soft = the
budget, so SIGXCPU comes first; hard = soft + 1). Files in /tmp and /dev/shm beyond ``tmpInodes``
(inodes are kernel memory that no size cap counts) end the job the same way with SIGXFSZ
(exit 153). This process is non-dumpable, so a program cannot reach its memory or descriptors
through /proc, and ptrace is refused by seccomp.

Before any user code runs, the child lowers its resource limits to the job's (CPU, file size, open
files, processes where its uid is private to the sandbox, address space where no memory cgroup
holds the job's limit) and installs a seccomp filter that forbids exec and the kernel interfaces a
student never needs (see ``sandbox/seccomp.py``; the BPF bytes arrive in the job as hex).
"""

import builtins
import ctypes
import gc
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
TEST_FILENAME = "<test>"
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
SECCOMP_MODE_FILTER = 2
IPC_RMID = 0
SHM_INFO, MSG_INFO, SEM_INFO = 14, 12, 19
# How often the supervisor looks at the job's CPU time and files while it runs.
POLL_SECONDS = 0.05
CPU_EXIT = 128 + signal.SIGXCPU
FILES_EXIT = 128 + signal.SIGXFSZ
_libc = None
# The worker's end of the pipe on which it tells pid 1 its exit status just before it exits.
EXITING = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


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
    """The job frame's JSON bytes."""
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte or len(header) > 20:
            raise EOFError("no job header")
        header += byte
    return read_exact(int(header))


def _clamp(which, value):
    hard = resource.getrlimit(which)[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def lower_limits(limits):
    """Called in the program's process before user code: the job's limits, never raised."""
    for which, value in (
        (resource.RLIMIT_FSIZE, limits.get("fileSizeBytes")),
        (resource.RLIMIT_NOFILE, limits.get("openFiles")),
        (resource.RLIMIT_CORE, 0),
    ):
        if value is not None:
            value = _clamp(which, value)
            resource.setrlimit(which, (value, value))
    seconds = limits.get("cpuSeconds")
    if seconds:
        # Soft below hard: SIGXCPU arrives first; SIGKILL only if the program ignores it.
        hard = _clamp(resource.RLIMIT_CPU, seconds + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (min(seconds, hard), hard))
    processes = limits.get("maxProcesses")
    if processes and private_uid():
        # RLIMIT_NPROC counts this uid's tasks in its user namespace, which is this sandbox's
        # alone: the job's processes plus those already here (the harness), this one included.
        value = _clamp(resource.RLIMIT_NPROC, tasks() - 1 + processes)
        resource.setrlimit(resource.RLIMIT_NPROC, (value, value))
    memory = limits.get("addressSpaceBytes")
    if memory:
        # No memory cgroup holds this job's limit: cap the address space above what the
        # interpreter already maps (+16 MiB for thread stacks and allocator slack).
        with open("/proc/self/statm", "rb") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
        value = _clamp(resource.RLIMIT_AS, mapped + memory + 16 * 1024 * 1024)
        resource.setrlimit(resource.RLIMIT_AS, (value, value))


def private_uid():
    """Is this uid alone in its user namespace (bwrap), rather than shared host-wide (Docker)?"""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split()[2] != "4294967295"
    except (OSError, IndexError):
        return False


def tasks():
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                count += len(os.listdir("/proc/" + name + "/task"))
            except OSError:
                pass
    return count


def install_seccomp(program_hex):
    if not program_hex:
        return
    program = bytes.fromhex(program_hex)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_char_p))
    if prctl(PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog)) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def prctl(option, arg2, arg3=0):
    zero = ctypes.c_ulong(0)
    return libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), zero, zero)


def become_init():
    """Before any user code: orphans come back here, signals from the job cannot end us, and the
    job cannot reach this process's memory or descriptors through /proc."""
    if os.getpid() != 1:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_DUMPABLE, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the one signal Python handles


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
    while tb is not None and tb.tb_frame.f_code.co_filename not in (FILENAME, TEST_FILENAME):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def worker(control, exiting):
    """The process that will run the program, forked while the sandbox warms up (so that neither
    the fork nor the copy-on-write faults after it are paid when the job has come). Reads the job,
    tells pid 1 what it needs over ``control``, closes it, then runs the program. Never returns."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Touch now what a job will write (every tracked object's header, then the path a program
    # takes): after the fork those pages are shared with pid 1 and each first write copies one.
    gc.collect()
    compiled, module = fresh_main("x = [str(i) for i in range(100)]\n")
    exec(compiled, module.__dict__)
    sys.stdout.flush()
    json.loads(json.dumps({"a": [1, "b"]}))
    os.write(1, READY)
    try:
        raw = read_job()
        job = json.loads(raw)
    except (EOFError, ValueError):
        os._exit(0)  # released from the pool without a job
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime  # warming up: not the program's CPU time
    if job.get("mode") == "tests":
        send(control, b"T" + str(used).encode() + b"\n" + raw)  # pid 1 runs the tests itself
        os._exit(0)
    del raw
    limits = dict(job.get("limits", {}), cpuBase=used)
    send(control, b"R" + json.dumps(limits).encode())
    global EXITING
    EXITING = exiting
    code: object = 0
    try:
        compiled, module = fresh_main(job["code"])
        lower_limits(job.get("limits", {}))
        install_seccomp(job.get("seccomp"))
        job.clear()
        try:
            exec(compiled, module.__dict__)
        except SystemExit as exc:
            code = exc.code
    except BaseException as exc:
        print_user_traceback(exc)
        code = 1
    finish(code)


def send(fd, data):
    while data:
        data = data[os.write(fd, data) :]
    os.close(fd)


def receive(fd):
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def supervise(child, budget, exiting):
    """Wait for the program, enforcing the job's budgets; the exit status to report.

    The worker says its status on ``exiting`` right before it exits (after its output is
    flushed), so that this process ends the sandbox while the worker's own exit goes on, instead
    of after it. Anything else in the sandbox can write there too, which only ends the job, as
    ``os._exit`` would. Otherwise (killed, or ``os._exit``) the status comes from waiting.
    """
    waitfd = pidfd(child)
    watch = [fd for fd in (waitfd, exiting) if fd is not None]
    status = None
    while status is None:
        if waitfd is None:
            time.sleep(0.002)
        ready, _, _ = select.select(watch, [], [], 0 if waitfd is None else POLL_SECONDS)
        if exiting in ready:
            said = os.read(exiting, 1)
            if said:
                kill_all()
                return said[0]
            watch.remove(exiting)  # closed without a word
        status = reap(child)
        if status is None and budget.due():
            over = budget.exceeded()
            if over:
                kill_all()
                return over
    kill_all()  # the program's main process ended: so does everything it started
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 128 + budget.signal(os.WTERMSIG(status))


class Budget:
    """The CPU time and the files of every process of the job (all but the harness)."""

    def __init__(self, limits, files):
        self.files0 = files  # what the empty /tmp and /dev/shm hold (their root folders)
        self.counter = None  # this sandbox's cgroup CPU counter, found at the first check
        self.offset = None
        self.start(limits)

    def start(self, limits):
        self.cpu = limits.get("cpuMs", 0) / 1000
        self.files = limits.get("tmpInodes", 0)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        # What the worker used warming up is not the program's.
        self.reaped = usage.ru_utime + usage.ru_stime + limits.get("cpuBase", 0)
        self.base = limits.get("cpuBase", 0)
        self.offset = None
        self.highest = self.last = 0.0
        self.seen = {}  # (pid, start time) -> own CPU ticks when last seen
        self.next = time.monotonic() + POLL_SECONDS

    def due(self):
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + POLL_SECONDS
        return True

    def exceeded(self):
        # Twice: what a first scan found is confirmed by a second (see cpu_used).
        if self.cpu and self.cpu_used() >= self.cpu and self.cpu_used() >= self.cpu:
            return CPU_EXIT
        if self.files and files_used() - self.files0 > self.files:
            return FILES_EXIT
        return 0

    def signal(self, signum):
        """The signal that ended a process, told as SIGXCPU when the CPU budget is spent
        (RLIMIT_CPU's hard limit is a SIGKILL)."""
        if signum == signal.SIGKILL and self.cpu and self.cpu_used() >= self.cpu:
            return signal.SIGXCPU
        return signum

    def cpu_used(self):
        """A lower bound of the CPU time the job's processes used: never more than they did."""
        ticks = 0
        me = str(os.getpid())
        for name in os.listdir("/proc"):
            if not name.isdigit() or name == me or name == "1":
                continue
            try:
                with open("/proc/" + name + "/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                own = int(fields[11]) + int(fields[12])  # utime, stime
                ticks += own + int(fields[13]) + int(fields[14])  # + its waited-for children's
                self.seen[(name, fields[19])] = own  # keyed by pid and start time
            except (OSError, IndexError, ValueError):
                pass
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        now = ticks / CLOCK_TICKS + usage.ru_utime + usage.ru_stime - self.reaped
        # A process reaped during the scan can be counted twice for a moment: keep only what two
        # scans in a row agree on. A process whose parent never waits for it (SIGCHLD ignored)
        # leaves no trace once gone, hence the highest measure kept, and what each process had
        # used when last seen.
        self.highest = max(self.highest, min(now, self.last))
        self.last = now
        used = max(self.highest, sum(self.seen.values()) / CLOCK_TICKS - self.base)
        # Where this sandbox can read its own cgroup's CPU counter (in a container), it has them all.
        if self.counter is None:
            self.counter = cgroup_cpu_counter() or ""
        if self.counter:
            total = read_counter(self.counter)
            if total is not None:
                if self.offset is None:
                    self.offset = total - used
                used = max(used, total - self.offset)
        return used


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cgroup_cpu_counter():
    """The CPU counter of this sandbox's own cgroup, if it is mounted here (in a container)."""
    try:
        with open("/proc/self/cgroup") as f:
            own = f.read().splitlines()
        with open("/proc/self/mountinfo") as f:
            mounts = f.read().splitlines()
    except OSError:
        return None
    groups = {}
    for line in own:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for name in parts[1].split(",") if parts[1] else ["unified"]:
                groups[name] = parts[2]
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, kind = left.split(), right.split()
        if len(fields) < 5 or len(kind) < 3:
            continue
        if kind[0] == "cgroup2":
            key, counter = "unified", "cpu.stat"
        elif kind[0] == "cgroup" and "cpuacct" in kind[2].split(","):
            key, counter = "cpuacct", "cpuacct.usage"
        else:
            continue
        root, point, group = fields[3], fields[4], groups.get(key)
        if group is None or not (group == root or group.startswith(root.rstrip("/") + "/")):
            continue
        path = os.path.join(point, group[len(root) :].lstrip("/"), counter)
        if read_counter(path) is not None:
            return path
    return None


def read_counter(path):
    """Seconds of CPU in a cgroup counter file (v1 cpuacct.usage: ns; v2 cpu.stat: usage_usec)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if path.endswith("cpu.stat"):
        for line in text.splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        return None
    return int(text) / 1e9


def files_used():
    used = 0
    for path in ("/tmp", "/dev/shm"):
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        used += st.f_files - st.f_ffree
    return used


def pidfd(pid):
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # kernels before 5.3
        return None


def reap(child):
    """Collect every process that ended (orphans come here); ``child``'s status if it ended."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == child:
            found = status


def reap_all(child, found=None):
    """After :func:`kill_all`: wait until no process is left; ``child``'s status."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return found
        if pid == child:
            found = status


def kill_all():
    """Kill every process of the sandbox but this one."""
    if os.getpid() == 1:
        # pid 1 of the sandbox's own pid namespace: -1 reaches exactly the sandbox's processes.
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        return
    # Not a namespace's init (never the case in a sandbox): only this process's descendants.
    for _ in range(100):
        parents = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open("/proc/" + name + "/stat", "rb") as f:
                        parents[int(name)] = int(f.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        mine, found = {os.getpid()}, True
        while found:
            found = False
            for pid, parent in parents.items():
                if parent in mine and pid not in mine:
                    mine.add(pid)
                    found = True
        mine.discard(os.getpid())
        if not mine:
            return
        for pid in mine:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        reap(None)
        time.sleep(0.001)


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
    if EXITING is not None:
        try:
            os.write(EXITING, bytes([code & 0xFF]))  # pid 1 ends the sandbox while this one exits
        except OSError:
            pass
    os._exit(code & 0xFF)


def _child(job, tests, test, out_w, err_w, res_w, in_r):
    # Forget every other test case before user code runs (this is the child's copy of memory).
    tests.clear()
    job.clear()
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
    phase = "program"
    try:
        compiled, module = fresh_main(test.pop("compiled"))
        lower_limits(test["limits"])
        install_seccomp(test["seccomp"])
        exec(compiled, module.__dict__)
        if test.get("function"):
            phase = "call"
            value = module.__dict__[test["function"]](*(test.get("args") or []))
            try:
                result["return"] = json.dumps(value)
            except (TypeError, ValueError) as exc:
                result["error"] = {
                    "type": "NotJSON",
                    "message": "return value is not JSON: " + str(exc)[:200],
                    "phase": phase,
                }
        if test.get("script") is not None:
            # A teacher's test program, after the student's, in the same module: passes when it
            # raises nothing.
            phase = "script"
            script = test["script"]
            linecache.cache[TEST_FILENAME] = (len(script), None, script.splitlines(True), TEST_FILENAME)
            exec(compile(script, TEST_FILENAME, "exec", dont_inherit=True), module.__dict__)
    except SystemExit as exc:
        result["exit"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        result["error"] = {"type": type(exc).__name__, "message": str(exc)[:1000], "phase": phase}
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
        error = {"type": type(exc).__name__, "message": str(exc), "phase": "compile"}
        observation = {"id": test.get("id"), "stderr": text, "error": error}
        sys.stdout.write(json.dumps(observation) + "\n")
    sys.stdout.write(json.dumps({"done": True}) + "\n")
    sys.stdout.flush()


def exit_status(status):
    return os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None


def run_tests(job, worker_cpu, files):
    cap = int(job.get("outputBytes", 65536))
    tests = job.pop("tests")
    try:
        compiled = compile_program(job["code"])  # once; each child runs it in a fresh module
    except SyntaxError as exc:
        report_syntax_error(tests, exc)
        return
    budget = Budget({}, files)
    scratch = scratch_state(job.get("scratch") or ())
    for index in range(len(tests)):
        if index and scratch:
            clean(scratch)  # the previous test's files and IPC objects are gone; its processes too
        limits = dict(job.get("limits", {}), cpuBase=0 if index else worker_cpu)
        if tests[index].get("cpuSeconds"):
            limits["cpuSeconds"] = tests[index]["cpuSeconds"]
            limits["cpuMs"] = tests[index]["cpuSeconds"] * 1000
        test = dict(tests[index], compiled=compiled, limits=limits, seccomp=job.get("seccomp"))
        observation = run_test(job, tests, test, cap, budget)
        sys.stdout.write(json.dumps(observation) + "\n")
        sys.stdout.flush()
    sys.stdout.write(json.dumps({"done": True}) + "\n")
    sys.stdout.flush()


def run_test(job, tests, test, cap, budget):
    pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, result, stdin
    (out_r, out_w), (err_r, err_w), (res_r, res_w), (in_r, in_w) = pipes
    budget.start(test["limits"])
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

    def take(fd, data):
        nonlocal truncated
        limit = 1_000_000 if fd == res_r else cap
        room = limit - len(buffers[fd])
        if len(data) > room:
            truncated = truncated or fd != res_r
            data = data[: max(room, 0)]
        buffers[fd] += data

    deadline = started + test.get("wallMs", 5000) / 1000
    timed_out = False
    over = 0
    open_fds = set(buffers)
    waitfd = pidfd(pid)
    status = None
    # The test ends when its process ends (whatever it started dies with it), when its time is up,
    # or when the job's CPU or file budget is spent.
    while status is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        watch = list(open_fds) + ([waitfd] if waitfd is not None else [])
        ready, _, _ = select.select(watch, [], [], min(remaining, POLL_SECONDS))
        for fd in ready:
            if fd != waitfd:
                data = os.read(fd, 65536)
                if data:
                    take(fd, data)
                else:
                    open_fds.discard(fd)
        status = reap(pid)
        if status is None and budget.due():
            over = budget.exceeded()
            if over:
                break
    elapsed_ms = int((time.monotonic() - started) * 1000)
    kill_all()
    # Every writer is gone now: what is left in the pipes, up to their end.
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], 1.0)
        if not ready:
            break
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                take(fd, data)
            else:
                open_fds.discard(fd)
    status = reap_all(pid, status)
    for fd in buffers:
        os.close(fd)
    if waitfd is not None:
        os.close(waitfd)
    try:
        result = json.loads(buffers[res_r] or b"{}")
    except ValueError:
        result = {}
    signum = None
    if over:
        signum = over - 128
    elif status is not None and os.WIFSIGNALED(status) and not timed_out:
        signum = budget.signal(os.WTERMSIG(status))
    return {
        "id": test.get("id"),
        "stdout": buffers[out_r].decode("utf-8", "replace"),
        "stderr": buffers[err_r].decode("utf-8", "replace"),
        "returnJson": result.get("return"),
        "error": result.get("error"),
        "exitCode": result["exit"] if "exit" in result else exit_status(status),
        "signal": signum,
        "timedOut": timed_out,
        "outputTruncated": truncated,
        "timeMs": elapsed_ms,
    }


def scratch_state(scratch):
    """The sandbox's private scratch folders (named by the host: its own tmpfs mounts), each with
    the mode to restore and how it looks while empty, to be emptied after each test.

    Emptying folders is safe only inside a sandbox: nothing at all unless this process is pid 1 of
    its own pid namespace and not root (a sandbox never is), and only folders that are mount
    points of their own, as the sandbox's private tmpfs are. Run by hand on a host, as root or not
    as a namespace's init, the harness empties nothing.
    """
    if os.getpid() != 1 or os.getuid() == 0 or os.geteuid() == 0:
        return {}
    state = {}
    for path in scratch:
        try:
            st = os.stat(path, follow_symlinks=False)
            parent = os.stat(os.path.dirname(path), follow_symlinks=False)
        except OSError:
            continue
        if st.st_dev == parent.st_dev or not os.access(path, os.W_OK):
            continue  # not a mount of its own, or not ours to empty
        mode = st.st_mode & 0o7777 if st.st_uid == os.getuid() else None
        state[path] = (mode, _looks(st))
    return state


def _looks(st):
    # A tmpfs or mqueue folder's size grows with every entry: unchanged means still empty.
    return st.st_size, st.st_nlink, st.st_mode


def clean(state):
    """Between two tests, when no other process exists: empty the scratch folders (one stat each
    when the test left them alone) and remove System V IPC objects (POSIX ones live in /dev/shm
    and /dev/mqueue)."""
    for path, (mode, empty) in state.items():
        try:
            if _looks(os.stat(path, follow_symlinks=False)) == empty:
                continue
            if mode is not None:
                os.chmod(path, mode)  # the test may have made it unusable
        except OSError:
            pass
        empty_dir(path)
    remove_ipc()


_moved = iter(range(1 << 62))


def empty_dir(path):
    """Remove everything below ``path``, following no link. No other process runs meanwhile, so
    nothing can swap a name between looking at it and using it. Sub-folders are moved up to the
    top and emptied in turn: no recursion, however deep the tree."""
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        pending: list[str] = []
        _sweep(top, top, pending)
        while pending:
            name = pending.pop()
            try:
                os.chmod(name, 0o700, dir_fd=top)  # a directory, not a link (seen by _sweep)
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            except OSError:
                continue
            try:
                _sweep(sub, top, pending)
            finally:
                os.close(sub)
            try:
                os.rmdir(name, dir_fd=top)
            except OSError:
                pass
    finally:
        os.close(top)


def _sweep(fd, top, pending):
    with os.scandir(fd) as entries:
        listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_dir in listed:
        try:
            if not is_dir:
                os.unlink(name, dir_fd=fd)
            elif fd == top:
                pending.append(name)
            else:
                os.chmod(name, 0o700, dir_fd=fd)  # moving a directory rewrites its ".."
                for _ in range(10):  # the test may have made a file of that name
                    moved = f".harness-{next(_moved)}"
                    try:
                        os.rename(name, moved, src_dir_fd=fd, dst_dir_fd=top)
                    except OSError:
                        continue
                    pending.append(moved)
                    break
        except OSError:
            pass


def remove_ipc():
    info = (ctypes.c_int * 32)()  # large enough for shm_info, msginfo and seminfo
    lib = libc()
    for kind, count in (
        ("shm", lambda: lib.shmctl(0, SHM_INFO, info) >= 0 and info[0]),  # shm_info.used_ids
        ("msg", lambda: lib.msgctl(0, MSG_INFO, info) >= 0 and info[0]),  # msginfo.msgpool
        ("sem", lambda: lib.semctl(0, 0, SEM_INFO, info) >= 0 and info[7]),  # seminfo.semusz
    ):
        if not count():
            continue  # none of this kind: one system call, no /proc read
        try:
            fd = os.open("/proc/sysvipc/" + kind, os.O_RDONLY)
        except OSError:
            continue
        try:
            table = os.read(fd, 1 << 20)
        finally:
            os.close(fd)
        for line in table.splitlines()[1:]:
            try:
                ident = int(line.split()[1])
            except (IndexError, ValueError):
                continue
            if kind == "shm":
                lib.shmctl(ident, IPC_RMID, None)
            elif kind == "msg":
                lib.msgctl(ident, IPC_RMID, None)
            else:
                lib.semctl(ident, 0, IPC_RMID)


def main():
    become_init()
    files = files_used()  # before any job: /tmp and /dev/shm empty
    control_r, control_w = os.pipe()
    exiting_r, exiting_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(control_r)
        os.close(exiting_r)
        worker(control_w, exiting_w)
    os.close(control_w)
    os.close(exiting_w)
    message = receive(control_r)  # until the worker closed it: before any user code runs
    if message[:1] == b"T":
        # The worker exits now; the first test's reaping collects it (and discounts its CPU time).
        used, _, job = message[1:].partition(b"\n")
        run_tests(json.loads(job), float(used), files)
        finish(0)
    if message[:1] == b"R":
        os._exit(supervise(pid, Budget(json.loads(message[1:]), files), exiting_r))
    # No job (released from the pool), or the worker failed before the program started.
    status = reap_all(pid)
    if status is not None and os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(exit_status(status) or 0)


main()
