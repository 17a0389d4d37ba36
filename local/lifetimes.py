"""Tie a child process's life to its parent's.

Every long-lived process Code Runner starts (embedded servers, supervised processes, test
servers) is started with :func:`die_with_parent` as its ``preexec_fn``: the kernel then sends the
child a signal when the parent dies, even by SIGKILL, so nothing is left running with parent 1.

``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so start such children
from a thread that lives as long as the process (the main thread, in every caller here).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

# Loaded once, before any fork: the preexec function must not load libraries in the child.
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    if _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when this process dies.

    The parent may die between ``fork`` and ``prctl``; the child then already has another parent
    and would never get the signal, so it checks and exits at once.
    """
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
