from __future__ import annotations

import os
import socket
from typing import Literal

import msgspec

from deploy.config import PositiveInt
from deploy.settings import CommonSettings


def _default_runner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RunnerSettings(CommonSettings, frozen=True, kw_only=True):
    """Runner (executes submissions in sandboxes)"""

    runner_concurrency: PositiveInt = 2
    runner_id: str = msgspec.field(default_factory=_default_runner_id)
    sandbox_backend: Literal["bwrap"] = "bwrap"
    # Interpreter inside the sandbox; "auto" picks /usr/bin/python3, else this Python's base.
    sandbox_python: str = "auto"
    # When the runner is root, each sandbox slot runs as host uid BASE+slot, so rlimits on
    # processes count per sandbox and never against root (which the kernel exempts).
    sandbox_host_uid_base: PositiveInt = 60_000
