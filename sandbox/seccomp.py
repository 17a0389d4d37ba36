"""Seccomp filters, assembled as classic BPF without libseccomp.

Two programs from one deny list (the kernel interfaces Docker's default profile also blocks, plus
a few more no student program needs):

- ``outer``: installed by bwrap before the harness starts (``--seccomp FD``).
- ``harness``: the same list plus ``execve``/``execveat``, installed by the harness itself right
  before user code runs, so a program can run no other binary (which also makes a writable /tmp
  useless for dropping executables).

Denied calls fail with EPERM. A foreign architecture or the x32 ABI kills the process. Only
x86_64 numbers are listed; on other machines :func:`program` returns ``None`` and the sandbox
runs without a filter (the runner logs it).
"""

from __future__ import annotations

import errno
import platform
import struct

# struct sock_filter opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_X32_SYSCALL_BIT = 0x40000000
_AUDIT_ARCH_X86_64 = 0xC000003E

X86_64_DENY: dict[str, int] = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "ustat": 136, "sysfs": 139,
    "vhangup": 153, "pivot_root": 155, "_sysctl": 156, "adjtimex": 159, "chroot": 161, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "create_module": 174,
    "init_module": 175, "delete_module": 176, "get_kernel_syms": 177, "query_module": 178,
    "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212, "clock_settime": 227,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305,
    "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_getfd": 438,
    "process_madvise": 440, "mount_setattr": 442,
}  # fmt: skip
X86_64_EXEC: dict[str, int] = {"execve": 59, "execveat": 322}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def assemble(arch: int, deny: list[int], *, reject_x32: bool) -> bytes:
    deny = sorted(set(deny))
    # Jump offsets are relative: a match skips the remaining checks and "allow" to land on "deny".
    body: list[bytes] = []
    body.append(_insn(_LD_W_ABS, 0, 0, 4))  # seccomp_data.arch
    body.append(_insn(_JEQ_K, 1, 0, arch))
    body.append(_insn(_RET_K, 0, 0, _RET_KILL_PROCESS))
    body.append(_insn(_LD_W_ABS, 0, 0, 0))  # seccomp_data.nr
    checks = len(deny) + (1 if reject_x32 else 0)
    if reject_x32:
        # x32 syscalls alias the x86_64 numbers with this bit set: refuse them all.
        body.append(_insn(_JGE_K, checks, 0, _X32_SYSCALL_BIT))
    for i, nr in enumerate(deny):
        remaining = len(deny) - i - 1
        body.append(_insn(_JEQ_K, remaining + 1, 0, nr))
    body.append(_insn(_RET_K, 0, 0, _RET_ALLOW))
    body.append(_insn(_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
    return b"".join(body)


def program(kind: str) -> bytes | None:
    """The BPF program for ``kind`` ("outer" or "harness") on this machine, if supported."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    deny = list(X86_64_DENY.values())
    if kind == "harness":
        deny += X86_64_EXEC.values()
    return assemble(_AUDIT_ARCH_X86_64, deny, reject_x32=True)
