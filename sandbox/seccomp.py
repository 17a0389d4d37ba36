"""Seccomp filters, assembled as classic BPF without libseccomp.

Two programs from one deny list (the kernel interfaces Docker's default profile also blocks, plus
a few more no student program needs):

- ``outer``: installed by bwrap before the harness starts (``--seccomp FD``).
- ``harness``: the same list plus ``execve``/``execveat``, installed by the harness itself right
  before user code runs, so a program can run no other binary (which also makes a writable /tmp
  useless for dropping executables).

What a refused call returns (:func:`denial_errno` says it per name):

- every call of the deny list fails with EPERM;
- ``clone`` fails with EPERM when its flags ask for a new namespace (user, mount, net, pid, ipc,
  uts, cgroup), as in Docker's profile; a plain fork or thread is allowed;
- ``clone3`` fails with ENOSYS: its flags live in a struct that seccomp cannot read, and ENOSYS
  makes the C library fall back to ``clone``, whose flags the filter does see;
- ``ioctl`` fails with EPERM for ``TIOCSTI`` and ``TIOCLINUX`` (pushing keystrokes into a
  terminal, CVE-2017-5226) whatever the descriptor;
- a foreign architecture kills the process; an x32-ABI call (the x86_64 numbers with bit 30 set,
  which would bypass the list) fails with EPERM.

Only x86_64 numbers are listed; on other machines :func:`program` returns ``None`` and the sandbox
runs without a filter (the runner logs it).
"""

from __future__ import annotations

import errno
import platform
import struct
from collections.abc import Iterable

# struct sock_filter opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_X32_SYSCALL_BIT = 0x40000000
_AUDIT_ARCH_X86_64 = 0xC000003E
# struct seccomp_data: nr, arch, instruction_pointer, args[6]; the low half of args[i] (little endian).
_NR, _ARCH = 0, 4


def _arg_low(i: int) -> int:
    return 16 + 8 * i


X86_64_DENY: dict[str, int] = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "ustat": 136, "sysfs": 139,
    "vhangup": 153, "pivot_root": 155, "_sysctl": 156, "adjtimex": 159, "chroot": 161, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "create_module": 174,
    "init_module": 175, "delete_module": 176, "get_kernel_syms": 177, "query_module": 178,
    "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212, "clock_settime": 227,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "migrate_pages": 256,
    "unshare": 272, "move_pages": 279, "perf_event_open": 298, "fanotify_init": 300,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_getfd": 438,
    "process_madvise": 440, "mount_setattr": 442, "quotactl_fd": 443, "open_tree_attr": 467,
}  # fmt: skip
X86_64_EXEC: dict[str, int] = {"execve": 59, "execveat": 322}
# Refused with ENOSYS, so that the C library falls back to a call the filter can inspect.
X86_64_ENOSYS: dict[str, int] = {"clone3": 435}
X86_64_CLONE = 56
X86_64_IOCTL = 16
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (Docker's mask).
CLONE_NAMESPACE_FLAGS = 0x7E020000
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
DENIED_IOCTLS = (TIOCSTI, TIOCLINUX)


def denial_errno(name: str) -> int:
    """The errno a filtered call named ``name`` fails with (``clone``: with namespace flags)."""
    return errno.ENOSYS if name in X86_64_ENOSYS else errno.EPERM


# An instruction whose jump targets may be labels, resolved by _link.
_Insn = tuple[int, int | str, int | str, int]


def _link(program: list[_Insn | str]) -> bytes:
    """Resolve label jumps (forward only, as classic BPF requires) and pack the program."""
    labels: dict[str, int] = {}
    insns: list[_Insn] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    out = []
    for i, (code, jt, jf, k) in enumerate(insns):
        offsets = []
        for target in (jt, jf):
            offset = labels[target] - i - 1 if isinstance(target, str) else target
            if not 0 <= offset <= 255:
                raise ValueError(f"jump out of range at instruction {i}: {offset}")
            offsets.append(offset)
        out.append(struct.pack("=HBBI", code, offsets[0], offsets[1], k))
    return b"".join(out)


def assemble(
    arch: int,
    deny: list[int],
    *,
    reject_x32: bool,
    enosys: Iterable[int] = (),
    clone: int | None = None,
    ioctl: int | None = None,
) -> bytes:
    """A filter: ``deny`` → EPERM, ``enosys`` → ENOSYS, ``clone`` with namespace flags → EPERM,
    ``ioctl`` with a terminal-injection request → EPERM, everything else allowed."""
    program: list[_Insn | str] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 1, 0, arch),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _NR),
    ]
    if reject_x32:
        # x32 syscalls alias the x86_64 numbers with this bit set: refuse them all.
        program.append((_JGE_K, "eperm", 0, _X32_SYSCALL_BIT))
    if clone is not None:
        program.append((_JEQ_K, "clone", 0, clone))
    if ioctl is not None:
        program.append((_JEQ_K, "ioctl", 0, ioctl))
    program += [(_JEQ_K, "enosys", 0, nr) for nr in sorted(set(enosys))]
    program += [(_JEQ_K, "eperm", 0, nr) for nr in sorted(set(deny))]
    program.append((_RET_K, 0, 0, _RET_ALLOW))
    if clone is not None:
        # clone() uses only the low 32 bits of its flags.
        program += ["clone", (_LD_W_ABS, 0, 0, _arg_low(0)), (_JSET_K, "eperm", 0, CLONE_NAMESPACE_FLAGS)]
        program.append((_RET_K, 0, 0, _RET_ALLOW))
    if ioctl is not None:
        # The request is an unsigned int: only the low 32 bits count.
        program += ["ioctl", (_LD_W_ABS, 0, 0, _arg_low(1))]
        program += [(_JEQ_K, "eperm", 0, request) for request in DENIED_IOCTLS]
        program.append((_RET_K, 0, 0, _RET_ALLOW))
    program += ["enosys", (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    program += ["eperm", (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM)]
    return _link(program)


def program(kind: str) -> bytes | None:
    """The BPF program for ``kind`` ("outer" or "harness") on this machine, if supported."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    deny = list(X86_64_DENY.values())
    if kind == "harness":
        deny += X86_64_EXEC.values()
    return assemble(
        _AUDIT_ARCH_X86_64,
        deny,
        reject_x32=True,
        enosys=X86_64_ENOSYS.values(),
        clone=X86_64_CLONE,
        ioctl=X86_64_IOCTL,
    )
