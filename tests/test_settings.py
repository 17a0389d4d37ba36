"""Settings: read once from the environment; every bad variable is named; the CLI exits 1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from config.loader import SettingsError, load
from gateway.settings import GatewaySettings
from runner.settings import RunnerSettings
from tests.conftest import ROOT


def test_defaults_and_conversion() -> None:
    s = load(
        GatewaySettings,
        {
            "NATS_URL": "nats://n:4222",
            "REDIS_URL": "redis://r",
            "MONGODB_URI": "mongodb://m",
            "JWT_SECRET": "k3Xq9vLm2PzR7tYw4NbC8sHd6FgJ1aQe5UoI0",
            "GATEWAY_PORT": "9000",
            "SSE_HEARTBEAT_SECONDS": "2.5",
        },
    )
    assert s.gateway_port == 9000 and s.sse_heartbeat_seconds == 2.5
    assert s.app_env == "development" and s.max_code_bytes == 64 * 1024
    with pytest.raises(AttributeError):
        s.gateway_port = 1  # type: ignore[misc]


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        load(RunnerSettings, {"APP_ENV": "prod", "RUNNER_CONCURRENCY": "0", "RUNNER_ACK_WAIT_SECONDS": "soon"})
    text = "\n".join(info.value.problems)
    assert "NATS_URL is required" in text
    assert "APP_ENV='prod'" in text
    assert "RUNNER_CONCURRENCY='0'" in text
    assert "RUNNER_ACK_WAIT_SECONDS='soon'" in text
    assert len(info.value.problems) == 4


def test_a_weak_secret_is_named_alongside_missing_urls() -> None:
    with pytest.raises(SettingsError) as info:
        load(GatewaySettings, {"APP_ENV": "production", "JWT_SECRET": "changeme"})
    text = "\n".join(info.value.problems)
    for name in ("NATS_URL", "REDIS_URL", "MONGODB_URI", "JWT_SECRET"):
        assert name in text, f"{name} not named in: {text}"


def test_up_reads_the_gateway_port_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import _gateway_address

    monkeypatch.setenv("GATEWAY_PORT", "8300")
    monkeypatch.delenv("GATEWAY_HOST", raising=False)
    assert _gateway_address(None, None) == ("127.0.0.1", 8300)
    assert _gateway_address("0.0.0.0", 9000) == ("0.0.0.0", 9000)
    monkeypatch.setenv("GATEWAY_PORT", "eighty")
    with pytest.raises(SettingsError, match="GATEWAY_PORT"):
        _gateway_address(None, None)


@pytest.mark.parametrize("command", [["gateway"], ["runner"], ["consume", "caching"]])
def test_processes_refuse_to_start_with_bad_settings(command: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NATS_URL": "", "GATEWAY_PORT": "http"}
    proc = subprocess.run([sys.executable, "-m", "cli", *command], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "NATS_URL is required" in proc.stderr
    if command == ["gateway"]:
        assert "GATEWAY_PORT='http' is invalid" in proc.stderr
        assert "REDIS_URL is required" in proc.stderr


def test_env_example_is_up_to_date() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli", "env-example"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert (ROOT / ".env.example").read_text() == out, "regenerate with `coderunner env-example > .env.example`"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "JWT_SECRET is required"),
        ("tooShort-9f8e7d6c5b4a", "JWT_SECRET must be at least 32 characters"),
        ("my-jwt_secret-for-the-platform-2026-x9", "JWT_SECRET looks like a placeholder"),
        ("ChangeMe-ChangeMe-ChangeMe-ChangeMe-01", "JWT_SECRET looks like a placeholder"),
        ("a" * 40, "JWT_SECRET has too few distinct characters"),
    ],
)
def test_gateway_refuses_weak_or_missing_jwt_secret(secret: str | None, message: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NATS_URL": "nats://127.0.0.1:1",
           "REDIS_URL": "redis://127.0.0.1:1", "MONGODB_URI": "mongodb://127.0.0.1:1"}  # fmt: skip
    if secret is not None:
        env["JWT_SECRET"] = secret
    proc = subprocess.run([sys.executable, "-m", "cli", "gateway"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert message in proc.stderr
    if secret:
        assert secret not in proc.stderr  # never echo a secret


def test_up_generates_secrets_only_in_development(tmp_path) -> None:
    from config.loader import secret_env

    assert secret_env(tmp_path / "staging", "staging") == {}
    assert not (tmp_path / "staging").exists()
    first = secret_env(tmp_path / "dev", "development")
    assert len(first["JWT_SECRET"]) >= 60
    assert secret_env(tmp_path / "dev", "development") == first  # kept, not regenerated


def test_cors_origin_must_be_one_origin() -> None:
    base = {"NATS_URL": "nats://n", "REDIS_URL": "redis://r", "MONGODB_URI": "mongodb://m",
            "JWT_SECRET": "k3Xq9vLm2PzR7tYw4NbC8sHd6FgJ1aQe5UoI0"}  # fmt: skip
    assert load(GatewaySettings, {**base, "CORS_ORIGIN": "https://app.example.org"}).cors_origin
    for bad in ("*", "https://a.org/path", "app.example.org", "https://a.org, https://b.org"):
        with pytest.raises(SettingsError, match="CORS_ORIGIN"):
            load(GatewaySettings, {**base, "CORS_ORIGIN": bad})


GATEWAY_ENV = {
    "NATS_URL": "nats://n:4222",
    "REDIS_URL": "redis://r",
    "MONGODB_URI": "mongodb://m",
    "JWT_SECRET": "k3Xq9vLm2PzR7tYw4NbC8sHd6FgJ1aQe5UoI0",
}


def test_trusted_proxies_take_networks_and_name_a_bad_entry() -> None:
    """An ingress controller's pods have no fixed address: their network must be trustable."""
    from gateway.security import client_address

    trusted = load(GatewaySettings, {**GATEWAY_ENV, "TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}).trusted_proxy_set

    def scope(peer: str, forwarded: str) -> dict[str, object]:
        return {"client": (peer, 1234), "headers": [(b"x-forwarded-for", forwarded.encode())]}

    assert client_address(scope("10.42.0.7", "203.0.113.9"), trusted) == "203.0.113.9"
    # The rightmost hop that is not a proxy: a client cannot pick its address by sending the header.
    assert client_address(scope("10.42.0.7", "198.51.100.1, 203.0.113.9, 10.42.3.3"), trusted) == "203.0.113.9"
    assert client_address(scope("192.0.2.5", "203.0.113.9"), trusted) == "192.0.2.5"  # not a proxy
    with pytest.raises(SettingsError) as info:
        load(GatewaySettings, {**GATEWAY_ENV, "TRUSTED_PROXIES": "10.0.0.0/8,ingress"})
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith("TRUSTED_PROXIES:")


def test_a_command_gives_up_on_an_unreachable_nats_in_one_line() -> None:
    """Services wait for the bus; a command says it is not there (it used to retry forever)."""
    from local.embedded import free_port

    done = subprocess.run(
        [sys.executable, "-m", "cli", "events", "abcdefgh12345"],
        env={"NATS_URL": f"nats://127.0.0.1:{free_port()}", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "coderunner events: NATS is not reachable at NATS_URL"
