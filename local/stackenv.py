"""Where the local stack's servers are: operator commands (``user-role``, ``seed``, ``events``) work
against what ``coderunner up`` started with no extra environment.

``up`` writes the addresses of the servers it uses to ``<data dir>/stack.env``; a setting in the
environment wins over the file.
"""

from __future__ import annotations

import os
from pathlib import Path

STACK_ENV = "stack.env"
KEYS = ("NATS_URL", "REDIS_URL", "MONGODB_URI")

# Per-user and per-address quotas out of the way, for benchmarks and the chaos run: they measure
# the pipeline, and every simulated student comes from one address.
NO_QUOTAS = {
    name: "1000000"
    for name in (
        "EXEC_LIMIT_PER_MINUTE",
        "EXEC_LIMIT_PER_DAY",
        "API_LIMIT_PER_MINUTE",
        "API_LIMIT_ANONYMOUS_PER_MINUTE",
        "API_LIMIT_PER_ADDRESS_PER_MINUTE",
    )
}


def data_dir() -> Path:
    return Path(os.environ.get("CODERUNNER_DATA_DIR") or ".data")


def write(data_dir: Path, env: dict[str, str]) -> None:
    path = data_dir / STACK_ENV
    path.write_text("".join(f"{key}={env[key]}\n" for key in KEYS if env.get(key)))


def stack_setting(name: str) -> str | None:
    """``name`` from the environment, else from the running local stack's ``stack.env``."""
    if os.environ.get(name):
        return os.environ[name]
    try:
        lines = (data_dir() / STACK_ENV).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key == name and value:
            return value
    return None
